//! The JSON report: exactly one document, the serde form of [`Report`].
use super::Report;

pub fn render(report: &Report) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("a Report always serializes");
    text.push('\n');
    text
}
