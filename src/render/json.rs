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

#[cfg(test)]
mod renderer_tests {
    use super::*;
    use crate::render::sample;
    use crate::schema::Report;

    /// Every line of the hand-built sample report, as src/render/expected/report.json has it.
    #[test]
    fn renders_the_sample_report_exactly() {
        assert_eq!(Json.render(&sample::report()), include_str!("expected/report.json"));
    }

    /// merge reads the JSON back: the report it reads renders to the same document, notes
    /// (one string each in JSON) included.
    #[test]
    fn the_document_reads_back_as_the_same_report() {
        let json = Json.render(&sample::report());
        let read: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(read.prompts[0].notes[1].comparison, "processed-vs-reference");
        assert_eq!(Json.render(&read), json);
    }
}
