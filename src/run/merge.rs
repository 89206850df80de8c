//! `gpt2-parity merge`: the JSON reports of `compare --shard I/N` runs, put back together into
//! the report a single run over every prompt writes: prompts in the run's order, then the
//! verdict, worst elements, repeatability and attribution recomputed from them, so that the
//! exit code is the single run's. Shards of different runs (the run identity: model, reference
//! and prompt list by content, tolerance, processing, dtype, device, tool) and shards whose
//! verdicts their own figures contradict are refused.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::cli::options::MergeOptions;
use crate::diagnose::prose::summary_notes;
use crate::render::format::count_of;
use crate::schema::attribution::StepRow;
use crate::schema::{PromptReport, Repeatability, Report, Timing};

pub fn run(options: &MergeOptions) -> Result<bool> {
    let shards = options.reports.iter().map(|path| read(path)).collect::<Result<Vec<_>>>()?;
    let report = merge(shards)?;
    options.destinations.write(&report)?;
    Ok(report.passed)
}

/// One shard's report, with the run identity it was written with.
struct ShardReport {
    path: PathBuf,
    report: Report,
    identity: Value,
}

fn read(path: &Path) -> Result<ShardReport> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read report {}", path.display()))?;
    let not_a_report = |error: serde_json::Error| {
        anyhow!(
            "report {} is not a gpt2-parity JSON report ({error}); pass the files of `compare --shard I/N --format json --output FILE`",
            path.display()
        )
    };
    let value: Value = serde_json::from_str(&text).map_err(not_a_report)?;
    let identity = run_identity(&value);
    let report: Report = serde_json::from_value(value).map_err(not_a_report)?;
    check_verdicts(path, &report)?;
    Ok(ShardReport { path: path.to_path_buf(), report, identity })
}

/// Refuses a report whose stored verdicts (of a comparison, a prompt or the report) differ
/// from what its own figures give: merge recomputes every verdict and trusts none.
fn check_verdicts(path: &Path, report: &Report) -> Result<()> {
    let word = |passed: bool| if passed { "passed" } else { "failed" };
    let shown = path.display();
    let number = |index: usize| report.shard.map_or(index, |shard| shard.shard.global_position(index)) + 1;
    for (index, prompt) in report.prompts.iter().enumerate() {
        for comparison in &prompt.comparisons {
            if comparison.verdict() != comparison.passed {
                bail!(
                    "report {shown} says {} of prompt {} {}, but its figures ({} outside tolerance, {} non-finite) say it {}; was it \
                     edited?",
                    comparison.name,
                    number(index),
                    word(comparison.passed),
                    count_of(comparison.outside_allclose, "element"),
                    comparison.non_finite,
                    word(comparison.verdict())
                );
            }
        }
        if PromptReport::verdict(&prompt.comparisons) != prompt.passed {
            bail!(
                "report {shown} says prompt {} {}, but its comparisons say it {}; was it edited?",
                number(index),
                word(prompt.passed),
                word(!prompt.passed)
            );
        }
    }
    if Report::verdict(&report.prompts, report.repeatability) != report.passed {
        bail!(
            "report {shown} says the run {}, but its prompts{} say it {}; was it edited?",
            word(report.passed),
            if report.repeatability.is_some() { " and repeatability" } else { "" },
            word(!report.passed)
        );
    }
    Ok(())
}

/// Joins shard reports of one run; refuses reports of different runs, a shard given twice, or a missing one.
fn merge(shards: Vec<ShardReport>) -> Result<Report> {
    let mut shards = shards.into_iter().peekable();
    let first = shards.peek().context("no reports to merge")?;
    let first_shown = first.path.display().to_string();
    let first_info = first
        .report
        .shard
        .with_context(|| format!("report {first_shown} is not a shard (it was made without --shard); merge only shard reports"))?;
    let identity = first.identity.clone();
    let mut slots: Vec<Option<PromptReport>> = (0..first_info.total_prompts).map(|_| None).collect();
    let mut seen = vec![None; first_info.shard.count];
    let mut repeatability: Option<Repeatability> = None;
    let mut prompt_seconds: Vec<f64> = vec![0.0; first_info.total_prompts];
    let mut started_at: Option<String> = None;
    let mut attribution: Option<Vec<(StepRow, Vec<Option<_>>)>> = None;
    let mut merged = None;
    for ShardReport { path, report, identity: shard_identity } in shards {
        let shown = path.display();
        let info = report
            .shard
            .with_context(|| format!("report {shown} is not a shard (it was made without --shard); merge only shard reports"))?;
        if (info.shard.count, info.total_prompts) != (first_info.shard.count, first_info.total_prompts) {
            bail!(
                "report {shown} is shard {}/{} of {} prompts, the first report is shard {}/{} of {} prompts; merge the shards of one run",
                info.shard.index,
                info.shard.count,
                info.total_prompts,
                first_info.shard.index,
                first_info.shard.count,
                first_info.total_prompts
            );
        }
        if let Some((field, first_value, value)) = differing_field("", &identity, &shard_identity) {
            bail!(
                "report {shown} differs from the first report ({first_shown}) in {field}, {} against {}: {}; merge the shards of one run",
                shown_value(&value),
                shown_value(&first_value),
                what_differs(&field)
            );
        }
        if let Some(earlier) = seen[info.shard.index - 1].replace(path.clone()) {
            bail!(
                "shard {}/{} is given twice: {} and {shown}; pass each shard's report once",
                info.shard.index,
                info.shard.count,
                Path::display(&earlier)
            );
        }
        if let Some(runs) = report.repeatability {
            let known = repeatability.get_or_insert(Repeatability { runs: runs.runs, identical: true, max_abs_diff: 0.0 });
            known.identical &= runs.identical;
            known.max_abs_diff = known.max_abs_diff.max(runs.max_abs_diff);
        }
        let positions: Vec<usize> = (0..report.prompts.len()).map(|position| info.shard.global_position(position)).collect();
        for (&position, &seconds) in positions.iter().zip(&report.timing.prompt_seconds) {
            if let Some(slot) = prompt_seconds.get_mut(position) {
                *slot = seconds;
            }
        }
        // RFC 3339 times in UTC to the second order as their text does.
        if started_at.as_ref().is_none_or(|earliest| report.timing.started_at < *earliest) {
            started_at = Some(report.timing.started_at.clone());
        }
        if let Some(rows) = &report.attribution {
            let merged_rows =
                attribution.get_or_insert_with(|| rows.iter().map(|row| (row.clone(), vec![None; first_info.total_prompts])).collect());
            for ((_, slots), row) in merged_rows.iter_mut().zip(rows) {
                for (&position, effect) in positions.iter().zip(&row.per_prompt) {
                    slots[position] = Some(effect.clone());
                }
            }
        }
        let mut report = report;
        for (position, prompt) in positions.into_iter().zip(std::mem::take(&mut report.prompts)) {
            let slot = slots
                .get_mut(position)
                .with_context(|| format!("report {shown} holds more prompts than its shard of {} can", first_info.total_prompts))?;
            *slot = Some(prompt);
        }
        merged.get_or_insert(report);
    }
    let missing: Vec<String> =
        seen.iter().enumerate().filter(|(_, path)| path.is_none()).map(|(index, _)| format!("{}/{}", index + 1, seen.len())).collect();
    if !missing.is_empty() {
        bail!("shards {} are missing; pass every shard's report", missing.join(", "));
    }
    let prompts: Vec<PromptReport> = slots
        .into_iter()
        .enumerate()
        .map(|(position, prompt)| {
            prompt.with_context(|| {
                format!("no shard holds prompt {} of {}; were the shards run on different prompts?", position + 1, first_info.total_prompts)
            })
        })
        .collect::<Result<_>>()?;
    let mut report = merged.expect("at least one report");
    report.shard = None;
    report.repeatability = repeatability;
    report.attribution = attribution.map(|rows| {
        rows.into_iter()
            .map(|(row, per_prompt)| {
                let per_prompt = per_prompt.into_iter().flatten().collect();
                StepRow::new(row.name, row.kind, row.steps, row.changed_tensors, per_prompt, report.tolerance)
            })
            .collect()
    });
    report.timing = Timing { started_at: started_at.expect("at least one report"), seconds: prompt_seconds.iter().sum(), prompt_seconds };
    report.prompts = prompts;
    report.finish();
    report.summary_notes = summary_notes(&report.summary);
    Ok(report)
}

/// What every shard of one run shares, as the shard wrote it: the report less its per-shard
/// parts (prompts and what is computed from them, the shard's place, its timing) and the
/// paths, which may differ between CI machines. What is left names the model, the reference,
/// the candidate and the prompt list by content digest, and the tolerance, criteria,
/// processing, dtype, device, prepend-BOS and tool version; a field a later version adds is
/// part of it unless listed here.
fn run_identity(report: &Value) -> Value {
    let mut value = report.clone();
    if let Some(object) = value.as_object_mut() {
        for key in ["prompts", "worst", "summary", "summary_notes", "passed", "shard", "repeatability", "attribution", "timing"] {
            object.remove(key);
        }
        for section in ["reference", "candidate"] {
            if let Some(Value::Object(section)) = object.get_mut(section) {
                section.remove("path");
            }
        }
    }
    value
}

/// The first field, as a dotted path ("reference.digest"), whose value differs, with the two
/// values (`first`'s, then `other`'s).
fn differing_field(path: &str, first: &Value, other: &Value) -> Option<(String, Value, Value)> {
    let (Value::Object(a), Value::Object(b)) = (first, other) else {
        return (first != other).then(|| (path.to_owned(), first.clone(), other.clone()));
    };
    a.keys().chain(b.keys()).find_map(|key| {
        let field = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        match (a.get(key), b.get(key)) {
            (Some(a), Some(b)) => differing_field(&field, a, b),
            (a, b) => Some((field, a.cloned().unwrap_or(Value::Null), b.cloned().unwrap_or(Value::Null))),
        }
    })
}

/// A value for a one-line message, texts (digests) cut to 24 characters.
fn shown_value(value: &Value) -> String {
    match value {
        Value::Null => "absent".to_owned(),
        Value::String(text) => match text.char_indices().nth(24) {
            Some((end, _)) => format!("{:?}", format!("{}…", &text[..end])),
            None => format!("{text:?}"),
        },
        other => other.to_string(),
    }
}

/// What a difference in the run identity's `field` means, in words.
fn what_differs(field: &str) -> &'static str {
    match field.split('.').next().unwrap_or(field) {
        "reference" => "it was checked against another reference",
        "candidate" => "it checked another candidate file",
        "prompts_digest" => "it ran other prompts, or the same prompts in another order",
        "model" => "it checked another model",
        "processing" => "it ran with other processing switches",
        "tolerance" => "it ran with another tolerance",
        "tool" | "schema_version" | "criteria" => "another version of gpt2-parity wrote it",
        _ => "it comes from another run",
    }
}
