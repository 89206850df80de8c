//! Reads `--prompts-file`: JSON Lines, so that prompts can hold newlines, tabs and any Unicode.
//! Each non-blank line is a JSON string or an object with a string field "prompt".
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

pub fn read_prompts_file(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path)
        .map_err(|error| anyhow!("cannot read prompts file {}: {error}; check the --prompts-file path", path.display()))?;
    parse_prompts(&bytes, path)
}

/// Parses prompts-file content; `origin` names the file in errors.
pub fn parse_prompts(bytes: &[u8], origin: &Path) -> Result<Vec<String>> {
    let origin = origin.display();
    let text = std::str::from_utf8(bytes).map_err(|error| {
        let line = bytes[..error.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow!("prompts file {origin} is not UTF-8 (line {line}); save it as UTF-8 JSON Lines")
    })?;
    // A byte-order mark, as some Windows editors write, is not part of the first prompt.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut prompts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_number = index + 1;
        let value: Value = serde_json::from_str(line).map_err(|error| {
            anyhow!(
                "prompts file {origin}, line {line_number}: not JSON ({error}); write each prompt as a JSON string, e.g. \"Hello World\""
            )
        })?;
        let prompt = match value {
            Value::String(prompt) => prompt,
            Value::Object(mut object) => match object.remove("prompt") {
                Some(Value::String(prompt)) => prompt,
                _ => bail!(
                    "prompts file {origin}, line {line_number}: the object has no string field \"prompt\"; write {{\"prompt\": \"...\"}}"
                ),
            },
            _ => bail!("prompts file {origin}, line {line_number}: expected a JSON string or {{\"prompt\": \"...\"}}"),
        };
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        bail!("prompts file {origin} holds no prompts; write one JSON string per line");
    }
    Ok(prompts)
}
