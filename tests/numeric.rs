//! The numbers the tool exists for, on the committed fixture: our forward against the Hugging
//! Face reference, our processing against its identities (processing.md section 3).
mod common;

use common::{centered, load_fixture, max_abs_diff, tensor};
use gpt2_parity::model::gpt2::forward;
use gpt2_parity::model::process::{process, process_part, process_unembedding_variants, Part, ProcessingOptions, Step};
use gpt2_parity::model::{TokenEmbedding, Unembed};
use tch::Kind;

const TOLERANCE: f64 = 1e-5;

#[test]
fn unprocessed_logits_match_the_reference_on_every_prompt() {
    let fixture = load_fixture();
    let vocab = fixture.config.vocab_size;
    for index in 0..fixture.reference.meta.prompts.len() {
        let reference = fixture.reference.prompt(index).unwrap();
        let ours = forward(&fixture.weights, &reference.tokens);
        let theirs = tensor(&reference.logits, &[-1, vocab]);
        let diff = max_abs_diff(&ours.logits, &theirs);
        assert!(diff <= TOLERANCE, "prompt {index}: unprocessed max |diff| {diff:e}");
        let resid = tensor(reference.resid.as_ref().expect("fixture has resid"), &ours.resid.size());
        let resid_diff = max_abs_diff(&ours.resid, &resid);
        assert!(resid_diff <= TOLERANCE, "prompt {index}: resid max |diff| {resid_diff:e}");
    }
}

#[test]
fn processed_logits_match_the_reference_after_centering() {
    let fixture = load_fixture();
    let vocab = fixture.config.vocab_size;
    let processed = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    for index in 0..fixture.reference.meta.prompts.len() {
        let reference = fixture.reference.prompt(index).unwrap();
        let ours = forward(&processed, &reference.tokens);
        let theirs = tensor(&reference.logits, &[-1, vocab]);
        let diff = max_abs_diff(&ours.logits, &centered(&theirs));
        assert!(diff <= TOLERANCE, "prompt {index}: processed vs centered reference max |diff| {diff:e}");
        // The raw difference is the per-position mean, which the fixture makes visible on purpose.
        assert!(max_abs_diff(&ours.logits, &theirs) > 1e-2, "prompt {index}: fixture logits should have a visible mean");
        // Processed residual stream = unprocessed residual minus its mean over d_model.
        let resid = tensor(reference.resid.as_ref().unwrap(), &ours.resid.size());
        let resid_diff = max_abs_diff(&ours.resid, &centered(&resid));
        assert!(resid_diff <= TOLERANCE, "prompt {index}: processed resid max |diff| {resid_diff:e}");
    }
}

#[test]
fn processed_equals_unprocessed_minus_each_positions_mean() {
    let fixture = load_fixture();
    let processed = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    for index in 0..fixture.reference.meta.prompts.len() {
        let tokens = fixture.reference.tokens(index).unwrap();
        let unprocessed = forward(&fixture.weights, &tokens).logits;
        let diff = max_abs_diff(&forward(&processed, &tokens).logits, &centered(&unprocessed));
        assert!(diff <= TOLERANCE, "prompt {index}: max |diff| {diff:e}");
    }
}

fn only(step: &str) -> ProcessingOptions {
    ProcessingOptions {
        fold_ln: step == "fold_ln",
        center_writing_weights: step == "center_writing_weights",
        center_unembed: step == "center_unembed",
        fold_value_biases: step == "fold_value_biases",
        refactor_factored_attn_matrices: false,
    }
}

#[test]
fn each_step_alone_keeps_log_probabilities_and_only_center_unembed_shifts_logits() {
    let fixture = load_fixture();
    for step in ["fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"] {
        let processed = process(fixture.weights.shallow_clone(), only(step));
        for index in 0..fixture.reference.meta.prompts.len() {
            let tokens = fixture.reference.tokens(index).unwrap();
            let before = forward(&fixture.weights, &tokens).logits;
            let after = forward(&processed, &tokens).logits;
            let log_softmax_diff = max_abs_diff(&after.log_softmax(-1, Kind::Float), &before.log_softmax(-1, Kind::Float));
            assert!(log_softmax_diff <= TOLERANCE, "{step}, prompt {index}: log-softmax max |diff| {log_softmax_diff:e}");
            let expected = if step == "center_unembed" { centered(&before) } else { before };
            let logits_diff = max_abs_diff(&after, &expected);
            assert!(logits_diff <= TOLERANCE, "{step}, prompt {index}: logits max |diff| {logits_diff:e}");
        }
    }
}

#[test]
fn processing_leaves_the_documented_structure() {
    let fixture = load_fixture();
    // The inputs that processing reads and would rewrite if it worked in place.
    let inputs = |weights: &gpt2_parity::model::Weights| {
        let (block, ln_f) = (&weights.blocks[0], weights.ln_f.as_ref().expect("the fixture has ln_f"));
        let ln_1 = block.ln_1.as_ref().expect("the fixture has ln_1");
        [
            &ln_f.weight,
            &ln_1.weight,
            &block.qkv_weight,
            &block.qkv_bias,
            &block.attn_out_weight,
            &block.mlp_out_weight,
            &weights.token_embedding.table(),
        ]
        .map(|tensor| tensor.copy())
    };
    let before = inputs(&fixture.weights);
    let processed = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    let d_model = fixture.config.n_embd;
    assert!(processed.ln_f.is_none());
    for block in &processed.blocks {
        assert!(block.ln_1.is_none() && block.ln_2.is_none(), "fold_ln removes every LayerNorm's affine part");
        // Folded reading weights are centered over their input axis.
        assert!(block.qkv_weight.mean_dim(0, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
        assert!(block.mlp_in_weight.mean_dim(0, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
        // Writing weights are centered over d_model; the value bias is folded away.
        assert!(block.attn_out_weight.mean_dim(-1, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
        assert!(block.mlp_out_weight.mean_dim(-1, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
        assert_eq!(block.qkv_bias.narrow(0, 2 * d_model, d_model).abs().max().double_value(&[]), 0.0);
    }
    assert!(processed.token_embedding.table().mean_dim(-1, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
    let Unembed::Untied { weight, bias } = &processed.unembed else { panic!("processing unties the unembedding") };
    assert!(weight.mean_dim(-1, false, Kind::Float).abs().max().double_value(&[]) < 1e-6);
    assert!(bias.mean(Kind::Float).abs().double_value(&[]) < 1e-6);
    // The input weights, whose tensors the shallow clone shares, were not written to:
    // processing is a pure function.
    for (index, (after, before)) in inputs(&fixture.weights).iter().zip(&before).enumerate() {
        assert!(after.equal(before), "processing changed input tensor {index} in place");
    }
}

#[test]
fn the_scripts_reference_reads_back_and_matches_our_tokenizer() {
    let fixture = load_fixture();
    let meta = &fixture.reference.meta;
    assert!(meta.prompts.len() >= 8, "the fixture reference covers at least 8 prompts");
    assert_eq!(meta.weights, fixture.digest, "made from the committed fixture weights");
    assert!(!meta.prepend_bos);
    assert_eq!(meta.attn_implementation, "eager");
    assert!(meta.producer["torch"].is_string() && meta.producer["transformers"].is_string());
    fixture.reference.check_model(&fixture.config, &fixture.digest, false).unwrap();
    assert_eq!(meta.prompts[0], "Hello World");
    assert_eq!(fixture.reference.tokens(0).unwrap(), vec![15496, 2159]);
    let mut lengths = Vec::new();
    for (index, prompt) in meta.prompts.iter().enumerate() {
        let ours = fixture.tokenizer.encode(prompt, false, fixture.config.n_positions).unwrap();
        assert_eq!(fixture.reference.tokens(index).unwrap(), ours, "prompt {prompt:?}");
        lengths.push(ours.len() as i64);
    }
    assert!(lengths.contains(&1), "a one-token prompt");
    assert!(lengths.contains(&fixture.config.n_positions), "a prompt of exactly n_positions tokens");
}

/// explain builds each row from parts processed under only the steps that shape them, shared
/// between rows: for every set of steps, that is the whole processing, bit for bit.
#[test]
fn each_part_processed_under_its_own_steps_is_the_whole_processing() {
    let fixture = load_fixture();
    let steps = Step::ALL;
    for mask in 0..(1u32 << steps.len()) {
        let chosen: Vec<Step> = steps.iter().enumerate().filter(|(bit, _)| mask & (1 << bit) != 0).map(|(_, step)| *step).collect();
        let options = ProcessingOptions::only(&chosen);
        let whole = process(fixture.weights.shallow_clone(), options);
        let mut assembled = fixture.weights.shallow_clone();
        for part in Part::ALL {
            let processed = process_part(fixture.weights.shallow_clone(), options.restricted_to(part), part);
            assembled.take_part(part, &processed);
        }
        for ((name, whole), (_, assembled)) in whole.named_tensors().into_iter().zip(assembled.named_tensors()) {
            assert!(whole.equal(&assembled), "{chosen:?}: {name} differs");
        }
    }
}

/// explain makes the unembedding's variants together, sharing one pass over W_U; each must be
/// what processing the unembedding under its steps alone gives, bit for bit, in any order and
/// with any company.
#[test]
fn unembedding_variants_made_together_are_each_made_alone() {
    let fixture = load_fixture();
    let sets = [vec![], vec![Step::FoldLn], vec![Step::CenterUnembed], vec![Step::FoldLn, Step::CenterUnembed]];
    let alone: Vec<_> = sets
        .iter()
        .map(|steps| process_part(fixture.weights.shallow_clone(), ProcessingOptions::only(steps), Part::Unembedding).named_tensors())
        .collect();
    // Every ordered selection of distinct sets: 4 singles, 12 pairs, 24 triples, 24 of all four.
    let mut selections: Vec<Vec<usize>> = (0..sets.len()).map(|index| vec![index]).collect();
    for _ in 1..sets.len() {
        let longer: Vec<Vec<usize>> = selections
            .iter()
            .filter(|selection| selection.len() == selections.last().unwrap().len())
            .flat_map(|selection| {
                (0..sets.len()).filter(|index| !selection.contains(index)).map(|index| [&selection[..], &[index]].concat())
            })
            .collect();
        selections.extend(longer);
    }
    assert_eq!(selections.len(), 64);
    for selection in selections {
        let variants: Vec<ProcessingOptions> = selection.iter().map(|&index| ProcessingOptions::only(&sets[index])).collect();
        let together = process_unembedding_variants(fixture.weights.shallow_clone(), &variants);
        for (&index, made) in selection.iter().zip(together) {
            for ((name, made), (_, alone)) in made.named_tensors().into_iter().zip(&alone[index]) {
                assert!(made.equal(alone), "{:?} among {selection:?}: {name} differs", sets[index]);
            }
        }
    }
}

/// A processed token embedding is centered row by row as rows are looked up; every lookup, of one
/// row or many, in any order, must give the bits that centering the whole table gives. Checked at
/// GPT-2's widths (small, medium, xl) and the fixture's, over more rows than one slab, with
/// GPT-2's magnitudes (wte entries around 0.1, a few rows far from mean-free).
#[test]
fn embedding_rows_centered_on_lookup_are_the_whole_tables_rows() {
    tch::manual_seed(7);
    for width in [32, 768, 1024, 1600] {
        let rows = 4096 + 901;
        let table = (tch::Tensor::randn([rows, width], (Kind::Float, tch::Device::Cpu)) * 0.11)
            + tch::Tensor::randn([rows, 1], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let embedding = TokenEmbedding::CenteredOnLookup(table);
        let whole = embedding.table();
        let order = tch::Tensor::randperm(rows, (Kind::Int64, tch::Device::Cpu));
        let same = |ids: &tch::Tensor| embedding.rows(ids).equal(&whole.index_select(0, ids));
        assert!(same(&order), "width {width}: every row at once, shuffled");
        for length in [1, 2, 3, 17, 1024] {
            for start in (0..rows - length).step_by(997) {
                assert!(same(&order.narrow(0, start, length)), "width {width}: {length} rows from {start}");
            }
        }
        for id in 0..rows {
            assert!(same(&tch::Tensor::from_slice(&[id])), "width {width}: row {id} alone");
        }
    }
}

/// The processed model's logits are the same bits whether its token embedding is centered on
/// lookup (compare) or in full (explain, which compares whole tensors).
#[test]
fn a_centered_table_and_centering_on_lookup_give_the_same_logits() {
    let fixture = load_fixture();
    let lazy = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    assert!(matches!(lazy.token_embedding, TokenEmbedding::CenteredOnLookup(_)));
    let mut whole = lazy.shallow_clone();
    whole.token_embedding = TokenEmbedding::Table(lazy.token_embedding.table());
    for index in 0..fixture.reference.meta.prompts.len() {
        let tokens = fixture.reference.tokens(index).unwrap();
        let (lazy, whole) = (forward(&lazy, &tokens), forward(&whole, &tokens));
        assert!(lazy.logits.equal(&whole.logits) && lazy.resid.equal(&whole.resid), "prompt {index}");
    }
}
