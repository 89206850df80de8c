//! JUnit XML, the format CI systems show as test results: one testcase per prompt and
//! comparison, named by both, with the time the prompt took, and a failure whose message leads
//! with the element the comparison's criterion judged worst and the likely cause in words; its
//! body holds the comparison's table and notes. The structure is the Jenkins junit-10.xsd's.
use super::cells::comparison_grid;
use super::format::{count_of, criterion_label, place, sci, times, xml_escape};
use super::table::layout;
use super::{prompt_label, shard_label, Render, View};
use crate::schema::{Comparison, Note, Report};

/// Test-report viewers show a failure's message on one line: longer ones are cut to this many characters.
const MESSAGE_LIMIT: usize = 200;

/// JUnit XML, one testcase per prompt and comparison.
pub struct Junit;

impl Render<Report> for Junit {
    fn render(&self, report: &Report) -> String {
        let cases: Vec<String> = report
            .prompts
            .iter()
            .enumerate()
            .flat_map(|(index, prompt)| {
                let label = prompt_label(report, index);
                let seconds = report.timing.prompt_seconds.get(index).copied();
                prompt.comparisons.iter().map(move |comparison| {
                    let name = format!("{label}: {}", comparison.name);
                    let failure = (!comparison.passed).then(|| failure(report, comparison, &prompt.notes));
                    testcase(&comparison.name, &name, seconds, failure)
                })
            })
            .chain(report.repeatability.map(|repeatability| {
                let failure = (!repeatability.identical).then(|| {
                    let message = format!(
                        "{} runs of every forward were not bit-identical: max |diff| {} between runs",
                        repeatability.runs,
                        sci(repeatability.max_abs_diff)
                    );
                    (message.clone(), message)
                });
                testcase("repeatability", "every forward, bit for bit", None, failure)
            }))
            .collect();
        let failures = cases.iter().filter(|case| case.contains("<failure ")).count();
        let properties: String = [
            ("model", report.model.source.clone()),
            ("weights", report.model.weights.clone()),
            ("reference", report.reference.path.clone()),
            ("reference digest", report.reference.digest.clone()),
            ("candidate", report.candidate.as_ref().map(|candidate| candidate.path.clone()).unwrap_or_default()),
            ("prompts digest", report.prompts_digest.clone()),
            ("atol", format!("{:e}", report.tolerance.atol)),
            ("rtol", format!("{:e}", report.tolerance.rtol)),
            ("dtype", report.dtype.name().to_owned()),
            ("device", report.device.clone()),
            ("shard", report.shard.map(|shard| format!("{}/{}", shard.shard.index, shard.shard.count)).unwrap_or_default()),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("      <property name=\"{name}\" value=\"{}\"/>\n", xml_escape(&value)))
        .collect();
        let suite = match shard_label(report) {
            Some(shard) => format!("gpt2-parity {}, {shard}", report.tool.version),
            None => format!("gpt2-parity {}", report.tool.version),
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuites name=\"gpt2-parity\" tests=\"{count}\" failures=\"{failures}\" errors=\"0\" time=\"{time}\">\n  \
             <testsuite name=\"{suite}\" tests=\"{count}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time}\" \
             timestamp=\"{timestamp}\">\n    \
             <properties>\n{properties}    </properties>\n{cases}  </testsuite>\n</testsuites>\n",
            count = cases.len(),
            suite = xml_escape(&suite),
            time = seconds(report.timing.seconds),
            timestamp = xml_escape(&report.timing.started_at),
            cases = cases.concat(),
        )
    }
}

/// Seconds as the junit XSD's SUREFIRE_TIME writes them: digits, a point, milliseconds.
fn seconds(value: f64) -> String {
    format!("{:.3}", value.max(0.0))
}

/// One testcase; `failure` is its (message, body) when it failed.
fn testcase(comparison: &str, name: &str, time: Option<f64>, failure: Option<(String, String)>) -> String {
    let time = time.map(|time| format!(" time=\"{}\"", seconds(time))).unwrap_or_default();
    let open = format!("    <testcase classname=\"gpt2-parity.{}\" name=\"{}\"{time}", xml_escape(comparison), xml_escape(name));
    match failure {
        None => format!("{open}/>\n"),
        Some((message, body)) => format!(
            "{open}>\n      <failure type=\"tolerance\" message=\"{}\">{}</failure>\n    </testcase>\n",
            xml_escape(&message),
            xml_escape(&body).replace("&#10;", "\n")
        ),
    }
}

/// The message: the element the criterion judged worst (for a shift-invariant row, its
/// shift-free |diff|, never the raw shift), the tolerance, then the likely cause in words, cut
/// to [`MESSAGE_LIMIT`]. The body: the comparison's table with every figure, and its notes.
fn failure(report: &Report, comparison: &Comparison, notes: &[Note]) -> (String, String) {
    let criterion = criterion_label(comparison.criterion);
    let tolerance = format!("atol {:e}, rtol {:e}", report.tolerance.atol, report.tolerance.rtol);
    let at = comparison.max_abs_diff_at.as_ref().map(|at| place(at, comparison.worst_is_position_shift));
    // Within tolerance, the rounding envelope failed it: its first side outside leads.
    let outside_envelope = comparison.rounding.as_ref().filter(|_| comparison.outside_allclose == 0).and_then(|rounding| {
        [&rounding.candidate, &rounding.reference].into_iter().find(|side| !side.passed()).map(|side| (side, rounding.factor))
    });
    let worst = match (comparison.non_finite, at, outside_envelope) {
        (0, _, Some((side, factor))) => {
            format!("{}: {} float32 rounding (factor {factor:.0}x; within {tolerance})", side.side, times(side.worst()))
        }
        (0, Some(at), None) => format!("{criterion} |diff| {} {at} ({tolerance})", sci(comparison.worst_abs_diff)),
        (0, None, None) => format!("{criterion} |diff| {} ({tolerance})", sci(comparison.worst_abs_diff)),
        (count, at, _) => format!("{}{}", count_of(count, "NaN/Inf element"), at.map(|at| format!(", the first {at}")).unwrap_or_default()),
    };
    let note: Option<&str> = notes.iter().find(|note| note.comparison == comparison.name).map(|note| note.text.as_str());
    let message = cut(&match note {
        Some(cause) => format!("{worst}; {cause}"),
        None => worst,
    });
    let table = layout(&comparison_grid(std::slice::from_ref(comparison), false), &View::default());
    let body = format!("{message}\n\n{table}{}", note.map(|note| format!("\n{note}\n")).unwrap_or_default());
    (message, body)
}

/// `text` cut to [`MESSAGE_LIMIT`] characters at a word, "…" marking the cut.
fn cut(text: &str) -> String {
    if text.chars().count() <= MESSAGE_LIMIT {
        return text.to_owned();
    }
    let head: String = text.chars().take(MESSAGE_LIMIT - 1).collect();
    let end = head.rfind(' ').filter(|&end| end > MESSAGE_LIMIT / 2).unwrap_or(head.len());
    format!("{}…", head[..end].trim_end_matches([',', ';', ':']))
}

#[cfg(test)]
mod renderer_tests {
    use super::*;
    use crate::render::sample;

    /// Every line of the hand-built sample report, as src/render/expected/junit.xml has it.
    #[test]
    fn renders_the_sample_report_exactly() {
        assert_eq!(Junit.render(&sample::report()), include_str!("expected/junit.xml"));
    }
}
