//! `gpt2-parity merge`: the JSON reports of `compare --shard I/N` runs, put back together into
//! the report a single run over every prompt writes: prompts in the run's order, then the
//! verdict, worst elements, repeatability and attribution recomputed from them, so that the
//! exit code is the single run's.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::cli::MergeArgs;
use crate::compare::attribution::StepRow;
use crate::report::outputs::Destinations;
use crate::report::{summary_notes, ComparisonSummary, PromptReport, Repeatability, Report};

pub fn run(args: &MergeArgs) -> Result<bool> {
    let destinations = Destinations {
        format: args.format,
        layout: &args.layout,
        output: args.output.as_deref().filter(|path| *path != Path::new("-")),
        extra: &args.outputs,
    };
    destinations.check()?;
    let shards = args.reports.iter().map(|path| Ok((path.clone(), read(path)?))).collect::<Result<Vec<_>>>()?;
    let report = merge(shards)?;
    destinations.write(&report)?;
    Ok(report.passed)
}

fn read(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read report {}", path.display()))?;
    serde_json::from_str(&text).map_err(|error| {
        anyhow!(
            "report {} is not a gpt2-parity JSON report ({error}); pass the files of `compare --shard I/N --format json --output FILE`",
            path.display()
        )
    })
}

/// Joins shard reports of one run; refuses reports of different runs, a shard given twice, or a missing one.
fn merge(shards: Vec<(PathBuf, Report)>) -> Result<Report> {
    let mut shards = shards.into_iter();
    let (first_path, first) = shards.next().context("no reports to merge")?;
    let first_info = first.shard.with_context(|| {
        format!("report {} is not a shard (it was made without --shard); merge only shard reports", first_path.display())
    })?;
    let identity = run_identity(&first);
    let mut slots: Vec<Option<PromptReport>> = (0..first_info.total_prompts).map(|_| None).collect();
    let mut seen = vec![None; first_info.shard.count];
    let mut repeatability: Option<Repeatability> = None;
    let mut attribution: Option<Vec<(StepRow, Vec<Option<_>>)>> = None;
    let mut merged = None;
    for (path, report) in std::iter::once((first_path, first)).chain(shards) {
        let shown = path.display();
        let info = report
            .shard
            .with_context(|| format!("report {shown} is not a shard (it was made without --shard); merge only shard reports"))?;
        if (info.shard.count, info.total_prompts) != (first_info.shard.count, first_info.total_prompts) {
            bail!(
                "report {shown} is shard {}/{} of {} prompts, the first report is of {}/{} prompts; merge the shards of one run",
                info.shard.index,
                info.shard.count,
                info.total_prompts,
                first_info.shard.count,
                first_info.total_prompts
            );
        }
        if let Some(field) = differing_field(&identity, &run_identity(&report)) {
            bail!("report {shown} differs from the first report in \"{field}\": it comes from another run; merge the shards of one run");
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
    report.passed = prompts.iter().all(|prompt| prompt.passed) && repeatability.map_or(true, |runs| runs.identical);
    report.summary = ComparisonSummary::collect(&prompts);
    report.worst = report.summary.iter().map(|comparison| comparison.worst.clone()).collect();
    report.summary_notes = summary_notes(&report.summary);
    report.prompts = prompts;
    Ok(report)
}

/// What every shard of one run shares: the report less its per-shard parts (prompts and what is
/// computed from them) and the paths, which may differ between CI machines.
fn run_identity(report: &Report) -> Value {
    let mut value = serde_json::to_value(report).expect("reports serialize");
    let object = value.as_object_mut().expect("a report is an object");
    for key in ["prompts", "worst", "summary", "summary_notes", "passed", "shard", "repeatability", "attribution"] {
        object.remove(key);
    }
    for section in ["reference", "candidate"] {
        if let Some(Value::Object(section)) = object.get_mut(section) {
            section.remove("path");
        }
    }
    value
}

/// The first top-level field whose value differs.
fn differing_field(a: &Value, b: &Value) -> Option<String> {
    let (Value::Object(a), Value::Object(b)) = (a, b) else { return None };
    a.keys().chain(b.keys()).find(|key| a.get(*key) != b.get(*key)).cloned()
}
