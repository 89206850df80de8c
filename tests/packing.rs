//! Packing prompts into one forward (model::gpt2) must not let one prompt's results depend on
//! another's: each prompt's logits and residual stream are checked alone against the same prompt
//! among different neighbours, in different packs, unprocessed and processed.
mod common;

use common::{load_fixture, max_abs_diff};
use gpt2_parity::model::gpt2::{
    forward, forward_each_block, forward_packed, forward_with, forward_with_each_block, packs, Activations, Computation,
};
use gpt2_parity::model::process::{process, ProcessingOptions};
use gpt2_parity::model::Weights;

/// The fixture's eight prompts (2 to 31 tokens; one of 1 token: "Hello"), and token runs that
/// fill its 32 positions.
fn prompts(fixture: &common::Fixture) -> Vec<Vec<i64>> {
    let mut prompts: Vec<Vec<i64>> =
        (0..fixture.reference.meta.prompts.len()).map(|index| fixture.reference.tokens(index).unwrap()).collect();
    let positions = fixture.config.n_positions;
    prompts.push((0..positions).map(|position| (position * 1543 + 7) % fixture.config.vocab_size).collect());
    prompts.push(vec![50256, 13, 198]);
    prompts
}

/// The packings checked: everything in one pack, in reverse order, each prompt between two
/// others, and pairs.
fn packings(count: usize) -> Vec<Vec<usize>> {
    let mut packings = vec![(0..count).collect(), (0..count).rev().collect()];
    packings.extend((0..count).map(|index| vec![(index + 3) % count, index, (index + 5) % count]));
    packings.extend((0..count).map(|index| vec![index, (index + 1) % count]));
    packings
}

fn weight_sets() -> Vec<(&'static str, Weights)> {
    let fixture = load_fixture();
    let processed = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    vec![("unprocessed", fixture.weights), ("processed", processed)]
}

/// The largest difference between each prompt alone and the same prompt in every packing, in
/// logits and in the residual stream, relative to the prompt's own largest logit and residual.
fn largest_packing_differences(weights: &Weights, prompts: &[Vec<i64>]) -> (f64, f64) {
    let alone: Vec<Activations> = prompts.iter().map(|tokens| forward(weights, tokens)).collect();
    let largest = |tensor: &tch::Tensor| tensor.abs().max().double_value(&[]);
    let (mut logits, mut resid) = (0.0f64, 0.0f64);
    for packing in packings(prompts.len()) {
        let packed_prompts: Vec<&[i64]> = packing.iter().map(|&index| &prompts[index][..]).collect();
        let packed = forward_packed(weights, &packed_prompts);
        for (place, &index) in packing.iter().enumerate() {
            let (ours, theirs) = (packed.prompt(place), &alone[index]);
            assert_eq!(ours.logits.size(), theirs.logits.size(), "prompt {index} keeps its shape in packing {packing:?}");
            logits = logits.max(max_abs_diff(&ours.logits, &theirs.logits) / largest(&theirs.logits));
            resid = resid.max(max_abs_diff(&ours.resid, &theirs.resid) / largest(&theirs.resid));
        }
    }
    (logits, resid)
}

/// On one thread, libtorch's matrix products compute each output row the same way whatever the
/// row count (packs are filled to the 4 rows where that starts), and every other step is per row
/// or per prompt: a prompt's results are the same bits in any pack. `compare --shard` and
/// `--threads 1`'s same-report-everywhere rely on this.
///
/// With several threads a matrix product may split its rows differently for another row count,
/// which can pick another kernel for a thread's few rows: the results may move by float32
/// rounding. The bound, 1e-5 of the prompt's largest value, is 84 float32 epsilons (1.2e-7):
/// room for a rounding in each of the 3 blocks' 4 products and their LayerNorms, compounded
/// (measured on two threads: 7e-7); a wrong mask or a neighbour's row would move them by the
/// order of the values themselves.
///
/// A pack of 4 to 32 rows on several threads splits each product's columns among them, each part
/// one thread's product (model::gpt2's split_columns): the same bits as one thread's forward.
///
/// One test, as libtorch's thread count is the whole process's.
#[test]
fn packing_changes_no_bit_on_one_thread_and_rounding_at_most_on_several() {
    let fixture = load_fixture();
    let prompts = prompts(&fixture);
    let weight_sets = weight_sets();
    tch::set_num_threads(1);
    for (name, weights) in &weight_sets {
        assert_eq!(largest_packing_differences(weights, &prompts), (0.0, 0.0), "{name}, one thread");
    }
    let one_thread: Vec<Vec<Activations>> =
        weight_sets.iter().map(|(_, weights)| prompts.iter().map(|tokens| forward(weights, tokens)).collect()).collect();
    tch::set_num_threads(2);
    for ((name, weights), one_thread) in weight_sets.iter().zip(&one_thread) {
        let (logits, resid) = largest_packing_differences(weights, &prompts);
        assert!(logits <= 1e-5 && resid <= 1e-5, "{name}, two threads: relative differences logits {logits:e}, resid {resid:e}");
        // Every prompt alone: at most the fixture's 32 positions, filled up to 4 rows.
        for (tokens, alone) in prompts.iter().zip(one_thread) {
            let split = forward(weights, tokens);
            let differences = (max_abs_diff(&split.logits, &alone.logits), max_abs_diff(&split.resid, &alone.resid));
            assert_eq!(differences, (0.0, 0.0), "{name}, {} tokens on two threads against one", tokens.len());
        }
    }
}

/// The rounding envelope's float64 passes run as one forward (model::gpt2::forward_with_each_block):
/// the truth, and our blocks on each side's own residual stream, come out as each computed alone,
/// within float64 rounding (1e-12 of the largest value, about 4,500 float64 epsilons; float32
/// rounding would be 1e-7), whatever the thread count. The two sides differ by 1e-3, so a side's
/// rows read from another's inputs, or the truth's rows from a side's, would show a thousand
/// million times over.
#[test]
fn the_envelopes_float64_passes_made_together_equal_each_made_alone() {
    let fixture = load_fixture();
    let weights = &fixture.weights;
    let largest = |tensor: &tch::Tensor| tensor.abs().max().double_value(&[]);
    let relative = |ours: &Activations, theirs: &Activations| {
        let logits = max_abs_diff(&ours.logits, &theirs.logits) / largest(&theirs.logits);
        let resid = max_abs_diff(&ours.resid, &theirs.resid) / largest(&theirs.resid);
        logits.max(resid)
    };
    for tokens in prompts(&fixture) {
        let ours = forward(weights, &tokens);
        let sides = [ours.resid.shallow_clone(), &ours.resid * 1.001];
        let (truth, each_block) = forward_with_each_block(weights, &tokens, &sides, &Computation::FLOAT64);
        let truth_alone = forward_with(weights, &tokens, &Computation::FLOAT64);
        assert_eq!(truth.logits.kind(), tch::Kind::Double);
        let difference = relative(&truth, &truth_alone);
        assert!(difference <= 1e-12, "{} tokens: the truth made together is {difference:e} off alone", tokens.len());
        assert_eq!(each_block.len(), sides.len());
        for (index, (side, together)) in sides.iter().zip(&each_block).enumerate() {
            let alone = forward_each_block(weights, &tokens, side, &Computation::FLOAT64);
            let difference = relative(together, &alone);
            assert!(difference <= 1e-12, "{} tokens, side {index}: made together it is {difference:e} off alone", tokens.len());
        }
        let between_sides = relative(&each_block[0], &each_block[1]);
        assert!(between_sides > 1e-5, "{} tokens: the two sides' blocks differ by only {between_sides:e}", tokens.len());
    }
}

/// A float64 forward of float32 weights widens them inside the few-row products
/// (model::widened) and casts them first for larger ones: either way it is the forward of a
/// float64 copy of the model (whose products libtorch runs as they are), within float64 rounding.
/// Prompts of 1 to 32 tokens, alone and with two sides' blocks: 4 to 96 rows, widened up to 20
/// and cast above.
#[test]
fn a_float64_forward_of_float32_weights_is_that_of_a_float64_copy() {
    let fixture = load_fixture();
    let weights = &fixture.weights;
    let copy = weights.shallow_clone().map(|tensor| tensor.to_kind(tch::Kind::Double));
    let largest = |tensor: &tch::Tensor| tensor.abs().max().double_value(&[]);
    for tokens in prompts(&fixture) {
        let ours = forward(weights, &tokens);
        let sides = [ours.resid.shallow_clone(), &ours.resid * 1.001];
        let widened = forward_with(weights, &tokens, &Computation::FLOAT64);
        let (cast, each_block) = forward_with_each_block(weights, &tokens, &sides, &Computation::FLOAT64);
        let exact = forward(&copy, &tokens);
        let copy_each_block = forward_each_block(&copy, &tokens, &sides[1], &Computation::FLOAT64);
        for (name, ours, theirs) in
            [("alone", &widened, &exact), ("with sides", &cast, &exact), ("a side's blocks", &each_block[1], &copy_each_block)]
        {
            let logits = max_abs_diff(&ours.logits, &theirs.logits) / largest(&theirs.logits);
            let resid = max_abs_diff(&ours.resid, &theirs.resid) / largest(&theirs.resid);
            assert!(logits <= 1e-12 && resid <= 1e-12, "{} tokens, {name}: logits {logits:e}, resid {resid:e}", tokens.len());
        }
    }
}

/// A pack's logits take a fifth of the model's weights, between 32 and 96 MiB: the fixture's
/// tiny model keeps the 32 MiB floor, 166 rows of GPT-2's vocabulary, so that its memory does
/// not grow with larger packs it gains nothing from.
#[test]
fn a_small_model_packs_at_the_floor() {
    let fixture = load_fixture();
    let packs = packs(&[1; 1000], &fixture.weights);
    assert_eq!(packs[0], 0..166);
    assert_eq!(packs.len(), 1000usize.div_ceil(166));
}

/// compare's unprocessed model beside a processed copy lets each block's checkpoint pages go once
/// a forward is done with them (Weights::released_after_use), and the next forward reads them
/// back from the file: the same bits, forward after forward, as a model that keeps them. Only
/// float32 weights that view the checkpoint can be read back so.
#[test]
fn weights_let_go_after_use_are_read_back_the_same() {
    let fixture = load_fixture();
    assert!(fixture.weights.views_checkpoint(), "the fixture's float32 tensors view its mapped file");
    let released = fixture.weights.released_after_use();
    let prompts = prompts(&fixture);
    let packed: Vec<&[i64]> = prompts.iter().map(|tokens| &tokens[..]).collect();
    let kept = forward_packed(&fixture.weights, &packed);
    for run in 0..3 {
        let again = forward_packed(&released, &packed);
        assert_eq!(max_abs_diff(&again.logits, &kept.logits), 0.0, "logits, run {run}");
        assert_eq!(max_abs_diff(&again.resid, &kept.resid), 0.0, "residual stream, run {run}");
    }
    let processed = process(fixture.weights.shallow_clone(), ProcessingOptions::default());
    assert!(!processed.views_checkpoint(), "processed weights are new memory");
    assert!(!fixture.weights.shallow_clone().map(|tensor| tensor.to_kind(tch::Kind::Double)).views_checkpoint(), "a float64 copy");
}
