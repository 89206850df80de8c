//! JUnit XML, the format CI systems show as test results: one testcase per prompt and
//! comparison, and a failure that carries the numbers a reader needs without opening the report.
use super::{prompt_label, snapshot_name, xml_escape, Report};
use crate::compare::diagnose::sci;
use crate::compare::{Comparison, Criterion, DiffLocation};

pub fn render(report: &Report) -> String {
    let cases: Vec<String> = report
        .prompts
        .iter()
        .enumerate()
        .flat_map(|(index, prompt)| {
            let label = prompt_label(report, index);
            prompt.comparisons.iter().map(move |comparison| {
                let notes: Vec<&str> =
                    prompt.notes.iter().map(String::as_str).filter(|note| note.starts_with(&format!("{}:", comparison.name))).collect();
                testcase(&comparison.name, &label, (!comparison.passed).then(|| failure(report, comparison, &notes)))
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
            testcase("repeatability", "every forward, bit for bit", failure)
        }))
        .collect();
    let failures = cases.iter().filter(|case| case.contains("<failure ")).count();
    let properties: String = [
        ("model", report.model.source.clone()),
        ("weights", report.model.weights.clone()),
        ("reference", report.reference.path.clone()),
        ("candidate", report.candidate.as_ref().map(|candidate| candidate.path.clone()).unwrap_or_default()),
        ("atol", format!("{:e}", report.tolerance.atol)),
        ("rtol", format!("{:e}", report.tolerance.rtol)),
        ("shard", report.shard.map(|shard| format!("{}/{}", shard.shard.index, shard.shard.count)).unwrap_or_default()),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(name, value)| format!("      <property name=\"{name}\" value=\"{}\"/>\n", xml_escape(&value)))
    .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"gpt2-parity\" tests=\"{count}\" failures=\"{failures}\" errors=\"0\">\n  \
         <testsuite name=\"gpt2-parity {version}\" tests=\"{count}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">\n    \
         <properties>\n{properties}    </properties>\n{cases}  </testsuite>\n</testsuites>\n",
        count = cases.len(),
        version = xml_escape(&report.tool.version),
        cases = cases.concat(),
    )
}

/// One testcase; `failure` is its (message, body) when it failed.
fn testcase(classname: &str, name: &str, failure: Option<(String, String)>) -> String {
    let open = format!("    <testcase classname=\"gpt2-parity.{}\" name=\"{}\" time=\"0\"", xml_escape(classname), xml_escape(name));
    match failure {
        None => format!("{open}/>\n"),
        Some((message, body)) => format!(
            "{open}>\n      <failure type=\"tolerance\" message=\"{}\">{}</failure>\n    </testcase>\n",
            xml_escape(&message),
            xml_escape(&body).replace("&#10;", "\n")
        ),
    }
}

/// The one-line message (max |diff| and where, criterion, tolerance, likely cause) and a body
/// with every figure that says whether the difference matters.
fn failure(report: &Report, comparison: &Comparison, notes: &[&str]) -> (String, String) {
    let place = |at: &Option<DiffLocation>| {
        at.as_ref().map(|at| format!(" at position {} token {} {:?}", at.position, at.token_id, at.token)).unwrap_or_default()
    };
    let criterion = match comparison.criterion {
        Criterion::Raw => "raw",
        Criterion::ShiftInvariant => "shift-invariant",
    };
    let cause = comparison
        .likely_cause
        .as_ref()
        .map(|cause| serde_json::to_string(cause).expect("causes serialize"))
        .unwrap_or_else(|| "none detected".to_owned());
    let message = format!(
        "{}: max |diff| {}{}; worst under criterion {criterion}: |diff| {}{}; atol {:e}, rtol {:e}; {} elements outside; non-finite {}; \
         likely cause {cause}",
        comparison.name,
        sci(comparison.max_abs_diff),
        place(&comparison.raw_max_abs_diff_at),
        sci(comparison.worst_abs_diff),
        place(&comparison.max_abs_diff_at),
        report.tolerance.atol,
        report.tolerance.rtol,
        comparison.outside_allclose,
        comparison.non_finite,
    );
    let first_divergent = comparison
        .resid
        .as_ref()
        .and_then(|resid| resid.iter().find(|snapshot| snapshot.passed == Some(false)))
        .map(|snapshot| {
            format!("\nfirst divergent residual snapshot: {} (max |diff| {})", snapshot_name(snapshot.index), sci(snapshot.max_abs_diff))
        })
        .unwrap_or_default();
    let body = format!(
        "{message}\nshift-free max |diff| {}; log-softmax max |diff| {}; KL mean {} max {}; top-1 agreement {:.1}%; positions outside {:?}{first_divergent}\n{}",
        sci(comparison.centered_max_abs_diff),
        sci(comparison.log_softmax_max_abs_diff),
        sci(comparison.kl_mean),
        sci(comparison.kl_max),
        100.0 * comparison.top1_agreement,
        comparison.positions_outside,
        notes.join("\n"),
    );
    (message, body)
}
