//! JSON output: exactly one pretty-printed document.
use serde::Serialize;

use super::Report;

pub fn render(report: &Report) -> String {
    to_document(report)
}

/// One JSON document and a final newline.
pub fn to_document(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("reports always serialize");
    text.push('\n');
    text
}
