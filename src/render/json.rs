//! JSON output: exactly one pretty-printed document, the report's own serde form.
use serde::Serialize;

use super::Render;

pub struct Json;

impl<Document: Serialize> Render<Document> for Json {
    fn render(&self, document: &Document) -> String {
        let mut text = serde_json::to_string_pretty(document).expect("reports always serialize");
        text.push('\n');
        text
    }
}
