//! `gpt2-parity explain`: runs the model with no processing, each step alone, then the steps
//! accumulated in TransformerLens's order, and attributes the processed-vs-unprocessed
//! difference to the steps. Needs no reference: every row is compared with the unprocessed model.
use anyhow::Result;
use tch::Tensor;

use super::spill::Replayable;
use super::{load_weights, progress_bar, to_vec};
use crate::cli::options::{Compute, ExplainOptions};
use crate::diagnose::attribution::{relative_change_from, squared_norm};
use crate::diagnose::prose::conclusions;
use crate::model::gpt2::{forward_packed, packs};
use crate::model::inputs::ModelInputs;
use crate::model::process::{process_part, process_unembedding_variants, Part, ProcessingOptions, Step};
use crate::model::Weights;
use crate::numeric::compare_logits;
use crate::render::{render, View};
use crate::schema::attribution::{PromptEffect, RowKind, StepRow, TensorChange};
use crate::schema::explain::{ExplainReport, ExplainedPrompt};
use crate::schema::{Criterion, Tolerance};
use crate::schema::{ModelInfo, Tool, SCHEMA_VERSION};
use crate::sys::output::emit;
use crate::sys::timings::{timed, Phase};

pub fn run(options: &ExplainOptions) -> Result<bool> {
    let Compute { device, dtype, threads } = options.compute;
    let prompts = &options.model.prompts;
    let inputs = ModelInputs::resolve(&options.model.model)?;
    let tokens = inputs.tokenize_all(prompts, options.model.prepend_bos)?;
    let checkpoint = inputs.open_checkpoint()?;
    let digest = checkpoint.digest.clone();
    let unprocessed = load_weights(&inputs, checkpoint, device, dtype)?;
    let tolerance = options.tolerance;
    let vocab = inputs.config.vocab_size as usize;
    let token_text = |id: i64| inputs.tokenizer.token_text(id);
    let rows = attribute(&unprocessed, &tokens, &options.processing.steps(), vocab, tolerance, &token_text, false)?;

    let report = ExplainReport {
        schema_version: SCHEMA_VERSION,
        tool: Tool::current(),
        model: ModelInfo::new(&inputs.files.source, &inputs.config, &digest),
        tolerance,
        prepend_bos: options.model.prepend_bos,
        device: crate::sys::device::name(device),
        threads,
        dtype,
        prompts: prompts.iter().cloned().zip(tokens).map(|(prompt, tokens)| ExplainedPrompt { prompt, tokens }).collect(),
        conclusions: conclusions(&rows, tolerance),
        rows,
    };
    let output = options.output.as_deref();
    let view = View::for_output(options.wide, false, output);
    timed(Phase::Render, || emit(&render(&report, options.format, view), output))?;
    Ok(true)
}

/// Explain's rows for `steps`: no processing, each step alone, then the steps accumulated in
/// TransformerLens's order, each compared with the unprocessed model on every prompt. The
/// baseline's and all steps' logits wait in a temporary file when `in_file` (compare spilling).
pub fn attribute(
    unprocessed: &Weights,
    tokens: &[Vec<i64>],
    steps: &[Step],
    vocab: usize,
    tolerance: Tolerance,
    token_text: &dyn Fn(i64) -> String,
    in_file: bool,
) -> Result<Vec<StepRow>> {
    // Every prompt through: the unprocessed model, then each row (baseline, each step alone, each
    // accumulation of two or more; the last is all steps).
    let progress = progress_bar(((1 + 2 * steps.len()) * tokens.len()) as u64);
    let packs = packs(&tokens.iter().map(Vec::len).collect::<Vec<_>>(), unprocessed);
    // Each prompt's logits, handed to `each` as its pack's forward makes them, so that a row's
    // logits are never all held at once.
    let for_each_prompt = |weights: &Weights, each: &mut dyn FnMut(usize, Vec<f32>) -> Result<()>| -> Result<()> {
        for pack in &packs {
            let prompts: Vec<&[i64]> = tokens[pack.clone()].iter().map(Vec::as_slice).collect();
            let activations = forward_packed(weights, &prompts);
            for index in 0..prompts.len() {
                each(pack.start + index, to_vec(&activations.prompt(index).logits))?;
                progress.inc(1);
            }
        }
        Ok(())
    };
    let mut base_logits = Replayable::new(in_file)?;
    for_each_prompt(unprocessed, &mut |_, logits| base_logits.push(logits))?;
    let before = Before::new(unprocessed);
    let variants: Vec<(String, RowKind, Vec<Step>)> =
        std::iter::once(("no processing (untied unembedding only)".to_owned(), RowKind::Baseline, Vec::new()))
            .chain(steps.iter().map(|step| (format!("{} alone", step.name()), RowKind::Alone, vec![*step])))
            .chain((2..=steps.len()).map(|count| {
                let name = steps[..count].iter().map(|step| step.name()).collect::<Vec<_>>().join(" + ");
                (name, RowKind::Accumulated, steps[..count].to_vec())
            }))
            .collect();
    // Rows are made most steps first: the first is all steps, whose logits every row's share of
    // the difference needs, and a part that a row shares with another (the accumulations share
    // their attention, MLP halves, embeddings or unembedding with the next shorter one and with the
    // steps alone) is used again soon after it is made, so that few are kept at a time.
    let mut order: Vec<usize> = (0..variants.len()).collect();
    order.sort_by_key(|&index| (std::cmp::Reverse(variants[index].2.len()), variants[index].1 != RowKind::Accumulated, index));
    let options: Vec<ProcessingOptions> = order.iter().map(|&index| ProcessingOptions::only(&variants[index].2)).collect();
    let mut parts = SharedParts { unprocessed, before: &before, kept: Vec::new() };
    // Every row's share of the difference is against all steps' logits: the first row's, kept.
    let mut all_logits = Replayable::new(in_file)?;
    let mut rows: Vec<Option<StepRow>> = variants.iter().map(|_| None).collect();
    for (position, &index) in order.iter().enumerate() {
        let (name, kind, row_steps) = &variants[index];
        let (weights, changed_tensors) = parts.weights(options[position], &options[position + 1..]);
        let mut per_prompt = Vec::with_capacity(tokens.len());
        for_each_prompt(&weights, &mut |prompt, row_logits| {
            let base = base_logits.get(prompt)?;
            let effect = |all: &[f32]| {
                timed(Phase::Statistics, || {
                    let comparison = compare_logits(name, Criterion::Raw, &row_logits, &base, vocab, tolerance, token_text);
                    PromptEffect::new(&comparison, &row_logits, &base, all)
                })
            };
            if position == 0 {
                per_prompt.push(effect(&row_logits));
                drop(base);
                all_logits.push(row_logits)
            } else {
                per_prompt.push(effect(&all_logits.get(prompt)?));
                Ok(())
            }
        })?;
        drop(weights);
        rows[index] = Some(StepRow::new(name.clone(), *kind, row_steps.clone(), changed_tensors, per_prompt, tolerance));
    }
    let rows = rows.into_iter().flatten().collect();
    progress.finish_and_clear();
    Ok(rows)
}

/// Processed parts kept for the rows still to come: each part ([`Part`]) is processed once for
/// each distinct set of the steps that shape it, its tensors' changes measured once, and kept
/// only while a later row needs it.
struct SharedParts<'a> {
    unprocessed: &'a Weights,
    before: &'a Before,
    kept: Vec<KeptPart>,
}

struct KeptPart {
    part: Part,
    /// The steps shaping it.
    steps: ProcessingOptions,
    /// The unprocessed weights with this part processed.
    weights: Weights,
    /// The part's changed tensors, each with its place among the named tensors.
    changes: Vec<(usize, TensorChange)>,
}

impl SharedParts<'_> {
    /// The model processed with `options`, made of kept parts where they fit, and the tensors
    /// that differ from the unprocessed ones; then only the parts `upcoming` rows need are kept.
    fn weights(&mut self, options: ProcessingOptions, upcoming: &[ProcessingOptions]) -> (Weights, Vec<TensorChange>) {
        let mut weights = self.unprocessed.shallow_clone();
        let mut changes = Vec::new();
        for part in Part::ALL {
            let steps = options.restricted_to(part);
            if self.position(part, steps).is_none() {
                self.make(part, steps, upcoming);
            }
            let kept = &self.kept[self.position(part, steps).expect("made above")];
            weights.take_part(part, &kept.weights);
            changes.extend(kept.changes.iter().cloned());
        }
        self.kept.retain(|kept| upcoming.iter().any(|options| options.restricted_to(kept.part) == kept.steps));
        // Each part changes its own tensors only, so the union lists each once, in name order.
        changes.sort_by_key(|(place, _)| *place);
        (weights, changes.into_iter().map(|(_, change)| change).collect())
    }

    /// Where `part` processed under `steps` is kept.
    fn position(&self, part: Part, steps: ProcessingOptions) -> Option<usize> {
        self.kept.iter().position(|kept| (kept.part, kept.steps) == (part, steps))
    }

    /// Processes `part` under `steps` and keeps it with its changes. The unembedding's variants
    /// share one pass over W_U, so every variant the `upcoming` rows need is made with it;
    /// other parts are made one at a time, so that fewer are held at once.
    fn make(&mut self, part: Part, steps: ProcessingOptions, upcoming: &[ProcessingOptions]) {
        let unprocessed = self.unprocessed.shallow_clone();
        let (variants, processed) = timed(Phase::Processing, || match part {
            Part::Unembedding => {
                let mut variants = vec![steps];
                for options in upcoming.iter().map(|options| options.restricted_to(part)) {
                    if !variants.contains(&options) && self.position(part, options).is_none() {
                        variants.push(options);
                    }
                }
                let processed = process_unembedding_variants(unprocessed, &variants);
                (variants, processed)
            }
            _ => (vec![steps], vec![process_part(unprocessed, steps, part)]),
        });
        for (steps, weights) in variants.into_iter().zip(processed) {
            let changes = timed(Phase::Statistics, || changed_tensors(self.before, &weights));
            self.kept.push(KeptPart { part, steps, weights, changes });
        }
    }
}

/// The unprocessed side of every row's weight comparison: each tensor as the weights hold it,
/// and in an order that reads memory straight through ([`in_memory_order`]), made once rather
/// than once per row.
struct Before {
    named: Vec<(String, Tensor)>,
    in_memory_order: Vec<Tensor>,
    /// Each tensor's squared norm, summed when a row first changes it.
    squared_norms: Vec<std::cell::OnceCell<f64>>,
}

impl Before {
    fn new(weights: &Weights) -> Self {
        let named = weights.named_tensors();
        let in_memory_order = named.iter().map(|(_, tensor)| in_memory_order(tensor)).collect();
        let squared_norms = named.iter().map(|_| std::cell::OnceCell::new()).collect();
        Self { named, in_memory_order, squared_norms }
    }

    /// Tensor `place`'s relative change in `after`, given in its own orientation.
    fn relative_change(&self, place: usize, after: &Tensor) -> f64 {
        let ordered = &self.in_memory_order[place];
        let after = if is_transposed(&self.named[place].1) { after.tr() } else { after.shallow_clone() };
        relative_change_from(ordered, *self.squared_norms[place].get_or_init(|| squared_norm(ordered)), &after)
    }
}

/// `tensor` itself when contiguous, its transpose when that is contiguous (a tied W_U is wte
/// transposed, and so is a processed W_U, which processing makes in wte's layout), else a
/// contiguous copy: a transposed matrix is compared as it lies in memory, not copied.
fn in_memory_order(tensor: &Tensor) -> Tensor {
    if is_transposed(tensor) {
        tensor.tr()
    } else {
        tensor.contiguous()
    }
}

fn is_transposed(tensor: &Tensor) -> bool {
    tensor.dim() == 2 && !tensor.is_contiguous() && tensor.tr().is_contiguous()
}

/// The tensors whose values differ between the two weight sets, with their relative change and
/// their place among the named tensors. A tensor that processing left alone is the same view of
/// the same memory on both sides.
fn changed_tensors(before: &Before, after: &Weights) -> Vec<(usize, TensorChange)> {
    let same_view = |a: &Tensor, b: &Tensor| a.data_ptr() == b.data_ptr() && a.size() == b.size() && a.stride() == b.stride();
    before
        .named
        .iter()
        .zip(after.named_tensors())
        .enumerate()
        .filter(|(_, ((_, unprocessed), (_, processed)))| !same_view(unprocessed, processed))
        .map(|(place, ((tensor, _), (_, processed)))| {
            (place, TensorChange { relative_change: before.relative_change(place, &processed), tensor: tensor.clone() })
        })
        .filter(|(_, change)| change.relative_change > 0.0)
        .collect()
}
