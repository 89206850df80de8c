//! One prompt's part of a report: its comparisons, their notes, and its verdict.
use serde::{Deserialize, Serialize};

use super::Comparison;

#[derive(Debug, Serialize, Deserialize)]
pub struct PromptReport {
    pub prompt: String,
    pub tokens: Vec<i64>,
    pub passed: bool,
    pub comparisons: Vec<Comparison>,
    /// Plain-language findings: why a difference is expected, or where a real one starts.
    pub notes: Vec<Note>,
}

/// One comparison's note: which comparison it is about, and what it says. The JSON report
/// writes it as one string, "processed-vs-reference: The ...".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Note {
    pub comparison: String,
    pub text: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.comparison, self.text)
    }
}

impl From<Note> for String {
    fn from(note: Note) -> String {
        note.to_string()
    }
}

impl TryFrom<String> for Note {
    type Error = String;

    /// Comparison names ("processed-vs-reference") hold no ": ", so the first one ends the name.
    fn try_from(text: String) -> Result<Self, String> {
        match text.split_once(": ") {
            Some((comparison, note)) => Ok(Note { comparison: comparison.to_owned(), text: note.to_owned() }),
            None => Err(format!("a note names its comparison first (\"processed-vs-reference: ...\"), not {text:?}")),
        }
    }
}

impl PromptReport {
    /// A prompt passes when every comparison's stored verdict does.
    pub fn verdict(comparisons: &[Comparison]) -> bool {
        comparisons.iter().all(|comparison| comparison.passed)
    }
}
