//! The three readers that take bytes from users never panic: the reference reader
//! (`ReferenceFile::from_bytes` and everything callable on what it returns), the config reader
//! (`Gpt2Config::parse`) and the prompts-file reader (`parse_prompts`). Each gets several
//! thousand inputs, mutated from small valid seeds with a seeded generator (bit flips, byte
//! swaps, truncations, insertions, deletions, duplications, splices, number swaps, and edits
//! of the safetensors header and JSON fields that keep the outer structure valid so that the
//! deeper checks run). Each input must give `Ok` or `Err`; a panic fails the test, naming the
//! input. The inputs are fixed by their count and seed, never by a clock; for longer runs set
//! GPT2_PARITY_FUZZ_ITERATIONS and GPT2_PARITY_FUZZ_SEED, or use the cargo-fuzz targets in fuzz/ (docs/fuzzing.md).
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

use gpt2_parity::model::Gpt2Config;
use gpt2_parity::prompts::parse_prompts;
use gpt2_parity::reference::ReferenceFile;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};

/// Inputs per reader unless GPT2_PARITY_FUZZ_ITERATIONS says otherwise (about a second each).
const ITERATIONS: usize = 25_000;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn iterations() -> usize {
    std::env::var("GPT2_PARITY_FUZZ_ITERATIONS").ok().and_then(|text| text.parse().ok()).unwrap_or(ITERATIONS)
}

fn seed(reader: u64) -> u64 {
    let base = std::env::var("GPT2_PARITY_FUZZ_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or(0x5eed_2024);
    base ^ reader.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

const INTERESTING_BYTES: &[u8] = b"\x00\xff\x7f\x80\"\\{}[],:\n\r 0-9eE.tufn\xc3\xe2";
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "7",
    "255",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "1e999",
    "-0",
    "0.5",
    "NaN",
];

/// One byte-level mutation of `bytes`; `focus` is where most edits land (the safetensors header).
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, corpus: &[Vec<u8>], focus: usize) {
    let position = |rng: &mut Rng, len: usize| {
        if focus > 0 && focus < len && rng.chance(80) {
            rng.below(focus)
        } else {
            rng.below(len)
        }
    };
    match rng.below(9) {
        0 if !bytes.is_empty() => {
            let at = position(rng, bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        1 if !bytes.is_empty() => {
            let at = position(rng, bytes.len());
            bytes[at] = *rng.pick(INTERESTING_BYTES);
        }
        2 => {
            let len = rng.below(bytes.len() + 1);
            bytes.truncate(len);
        }
        3 => {
            let at = position(rng, bytes.len() + 1).min(bytes.len());
            let count = 1 + rng.below(16);
            let insert: Vec<u8> =
                (0..count).map(|_| if rng.chance(50) { *rng.pick(INTERESTING_BYTES) } else { rng.next() as u8 }).collect();
            bytes.splice(at..at, insert);
        }
        4 if !bytes.is_empty() => {
            let start = position(rng, bytes.len());
            let end = (start + 1 + rng.below(32)).min(bytes.len());
            bytes.drain(start..end);
        }
        5 if !bytes.is_empty() => {
            let start = rng.below(bytes.len());
            let end = (start + 1 + rng.below(64)).min(bytes.len());
            let chunk = bytes[start..end].to_vec();
            let at = position(rng, bytes.len() + 1).min(bytes.len());
            bytes.splice(at..at, chunk);
        }
        6 => {
            let other = rng.pick(corpus);
            let keep = rng.below(bytes.len() + 1);
            let from = rng.below(other.len() + 1);
            bytes.truncate(keep);
            bytes.extend_from_slice(&other[from..]);
        }
        7 => {
            // Swap one run of ASCII digits for an interesting number.
            let digits: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i].is_ascii_digit()).collect();
            if let Some(&start) = digits.get(rng.below(digits.len())) {
                let end = (start..bytes.len()).find(|&i| !bytes[i].is_ascii_digit()).unwrap_or(bytes.len());
                bytes.splice(start..end, rng.pick(INTERESTING_NUMBERS).bytes());
            }
        }
        _ => {
            if !bytes.is_empty() {
                let a = rng.below(bytes.len());
                let b = rng.below(bytes.len());
                bytes.swap(a, b);
            }
        }
    }
}

/// A JSON value chosen to upset a reader expecting something else.
fn odd_json(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(i64::MAX),
        5 => json!(u64::MAX),
        6 => json!(1.5),
        7 => json!(1e300),
        8 => json!("gelu_new"),
        9 => json!([1, 2, 3]),
        10 => json!({"a": [[[]]]}),
        _ => json!(rng.below(70000)),
    }
}

/// Changes, removes or adds one field somewhere in `value`.
fn mutate_json(rng: &mut Rng, value: &mut Value) {
    match value {
        Value::Object(object) if !object.is_empty() && rng.chance(85) => {
            let keys: Vec<String> = object.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(4) {
                0 => {
                    object.remove(&key);
                }
                1 => {
                    object.insert(format!("{key}_{}", rng.below(9)), odd_json(rng));
                }
                2 => mutate_json(rng, object.get_mut(&key).unwrap()),
                _ => {
                    object.insert(key, odd_json(rng));
                }
            }
        }
        Value::Array(items) if !items.is_empty() && rng.chance(85) => match rng.below(3) {
            0 => {
                items.pop();
            }
            1 => items.push(odd_json(rng)),
            _ => {
                let at = rng.below(items.len());
                mutate_json(rng, &mut items[at]);
            }
        },
        other => *other = odd_json(rng),
    }
}

/// Runs `exercise` on `input`; a panic fails the test and names the input.
fn must_not_panic(reader: &str, iteration: usize, input: &[u8], exercise: impl FnOnce(&[u8]) -> bool) -> bool {
    match catch_unwind(AssertUnwindSafe(|| exercise(input))) {
        Ok(accepted) => accepted,
        Err(_) => {
            let shown: String = input.iter().take(600).map(|&b| format!("{b:02x}")).collect();
            let dump = std::env::temp_dir().join(format!("gpt2-parity-fuzz-{}-{iteration}.bin", reader.replace(' ', "-")));
            let _ = std::fs::write(&dump, input);
            panic!("{reader}: input {iteration} panicked (saved to {}); first bytes: {shown}", dump.display());
        }
    }
}

/// Drives one reader on its corpus, then on generated inputs up to [`iterations`] in all;
/// returns (inputs tried, inputs accepted).
fn fuzz(
    reader: &str,
    seed: u64,
    corpus: &[Vec<u8>],
    mut make: impl FnMut(&mut Rng) -> Vec<u8>,
    exercise: impl Fn(&[u8]) -> bool,
) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let (mut tried, mut accepted) = (0, 0);
    for seed_input in corpus {
        accepted += usize::from(must_not_panic(reader, tried, seed_input, &exercise));
        tried += 1;
    }
    while tried < iterations() {
        let input = make(&mut rng);
        accepted += usize::from(must_not_panic(reader, tried, &input, &exercise));
        tried += 1;
    }
    // The time is shown, never judged.
    eprintln!("{reader}: {tried} inputs, {accepted} accepted, none panicked ({:.1} s)", started.elapsed().as_secs_f64());
    (tried, accepted)
}

// ---------------------------------------------------------------- reference

/// The config the reference seeds are made for: V = 5, L = 1, D = 4.
fn small_config() -> Gpt2Config {
    let text = json!({"vocab_size": 5, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 2}).to_string();
    Gpt2Config::parse(text.as_bytes(), Path::new("small/config.json")).unwrap()
}

const WEIGHTS: &str = "sha256:0123";

struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn floats(shape: &[usize], rng: &mut Rng) -> RawTensor {
    let count: usize = shape.iter().product();
    let data = (0..count).flat_map(|_| ((rng.below(2000) as f32 - 1000.0) / 100.0).to_le_bytes()).collect();
    RawTensor { dtype: Dtype::F32, shape: shape.to_vec(), data }
}

fn serialize(tensors: &[(String, RawTensor)], metadata: HashMap<String, String>) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, tensor)| (name.clone(), TensorView::new(tensor.dtype, tensor.shape.clone(), &tensor.data).unwrap()))
        .collect();
    safetensors::serialize(views, Some(metadata)).unwrap()
}

fn reference_metadata(prompts: &[&str]) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_owned(), "gpt2-parity-reference/1".to_owned()),
        ("prompts".to_owned(), serde_json::to_string(prompts).unwrap()),
        ("model".to_owned(), "small".to_owned()),
        ("weights".to_owned(), WEIGHTS.to_owned()),
        ("prepend_bos".to_owned(), "false".to_owned()),
        ("dtype".to_owned(), "float32".to_owned()),
        ("attn_implementation".to_owned(), "eager".to_owned()),
        ("producer".to_owned(), "{\"python\": \"3\"}".to_owned()),
    ])
}

/// A valid reference for [`small_config`]: `lengths[i]` tokens for prompt i, with or without the optional tensors.
fn valid_reference(rng: &mut Rng, lengths: &[usize], optional: bool) -> Vec<u8> {
    let (vocab, layers, d_model) = (5, 1, 4);
    let mut tensors = Vec::new();
    for (i, &t) in lengths.iter().enumerate() {
        let tokens: Vec<u8> = (0..t).flat_map(|_| (rng.below(vocab) as i64).to_le_bytes()).collect();
        tensors.push((format!("prompt.{i}.tokens"), RawTensor { dtype: Dtype::I64, shape: vec![t], data: tokens }));
        tensors.push((format!("prompt.{i}.logits"), floats(&[t, vocab], rng)));
        if optional {
            tensors.push((format!("prompt.{i}.resid"), floats(&[layers + 1, t, d_model], rng)));
            tensors.push((format!("prompt.{i}.tl_processed_logits"), floats(&[t, vocab], rng)));
            tensors.push((format!("prompt.{i}.tl_unprocessed_logits"), floats(&[t, vocab], rng)));
        }
    }
    let prompts: Vec<String> = (0..lengths.len()).map(|i| format!("prompt {i} ü")).collect();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    serialize(&tensors, reference_metadata(&prompts))
}

/// A reference built from random parts: valid safetensors, anything inside.
fn random_reference(rng: &mut Rng) -> Vec<u8> {
    let prompts = rng.below(4);
    let dtypes = [Dtype::F32, Dtype::F32, Dtype::F32, Dtype::I64, Dtype::F16, Dtype::U8, Dtype::BOOL];
    let names = ["tokens", "logits", "resid", "tl_processed_logits", "tl_unprocessed_logits", "other"];
    let mut tensors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..rng.below(10) {
        let name = format!("prompt.{}.{}", rng.below(prompts + 2), rng.pick(&names));
        if !seen.insert(name.clone()) {
            continue;
        }
        let dtype = if name.ends_with("tokens") && rng.chance(70) {
            Dtype::I64
        } else if rng.chance(70) {
            Dtype::F32
        } else {
            *rng.pick(&dtypes)
        };
        let rank = rng.below(4);
        let shape: Vec<usize> = (0..rank).map(|_| rng.below(6)).collect();
        let bytes = shape.iter().product::<usize>() * dtype.bitsize() / 8;
        let data = (0..bytes).map(|_| rng.next() as u8).collect();
        tensors.push((name, RawTensor { dtype, shape, data }));
    }
    let prompt_list: Vec<String> = (0..prompts).map(|i| format!("p{i}")).collect();
    let prompt_list: Vec<&str> = prompt_list.iter().map(String::as_str).collect();
    let mut metadata = reference_metadata(&prompt_list);
    if rng.chance(30) {
        let keys: Vec<String> = metadata.keys().cloned().collect();
        let key = rng.pick(&keys).clone();
        if rng.chance(50) {
            metadata.remove(&key);
        } else {
            metadata.insert(key, rng.pick(&["", "true", "[]", "[1]", "{}", "float16", "[\"p0\",\"p0\",\"p0\",\"p0\",\"p0\"]"]).to_string());
        }
    }
    serialize(&tensors, metadata)
}

/// Edits a valid safetensors blob at the tensor level (dtype, shape, name, presence, values,
/// metadata) and serializes it again, so that the result is still readable safetensors and the
/// reference's own checks, not the container's, have to catch the problem.
fn mutate_tensors(rng: &mut Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    let file = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let mut tensors: Vec<(String, RawTensor)> = file
        .iter()
        .map(|(name, view)| (name.to_owned(), RawTensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() }))
        .collect();
    let resize = |tensor: &mut RawTensor, rng: &mut Rng| {
        let bytes = tensor.shape.iter().product::<usize>() * tensor.dtype.bitsize() / 8;
        tensor.data.resize(bytes, rng.next() as u8);
    };
    let suffixes = ["tokens", "logits", "resid", "tl_processed_logits", "tl_unprocessed_logits"];
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(tensors.len());
        match rng.below(10) {
            0 if !tensors.is_empty() => {
                tensors.remove(at);
            }
            1 if !tensors.is_empty() => {
                let name = format!("prompt.{}.{}", rng.below(4), rng.pick(&suffixes));
                if tensors.iter().all(|(other, _)| *other != name) {
                    tensors[at].0 = name;
                }
            }
            2 if !tensors.is_empty() => {
                let tensor = &mut tensors[at].1;
                tensor.dtype = *rng.pick(&[Dtype::F32, Dtype::I64, Dtype::F16, Dtype::F64, Dtype::U8, Dtype::I32, Dtype::BOOL]);
                resize(tensor, rng);
            }
            3 if !tensors.is_empty() => {
                let tensor = &mut tensors[at].1;
                tensor.shape = (0..rng.below(5)).map(|_| rng.below(7)).collect();
                resize(tensor, rng);
            }
            4 if !tensors.is_empty() && !tensors[at].1.shape.is_empty() => {
                let tensor = &mut tensors[at].1;
                let axis = rng.below(tensor.shape.len());
                tensor.shape[axis] = if rng.chance(50) { tensor.shape[axis] + 1 } else { tensor.shape[axis].saturating_sub(1) };
                resize(tensor, rng);
            }
            5 if !tensors.is_empty() => {
                // Odd values: huge or negative token ids, NaN and Inf logits.
                let tensor = &mut tensors[at].1;
                let width = (tensor.dtype.bitsize() / 8).max(1);
                let chunks = tensor.data.len() / width;
                if chunks > 0 {
                    let chunk = rng.below(chunks) * width;
                    let value: Vec<u8> = match width {
                        8 => rng.pick(&[i64::MIN, -1, i64::MAX, 50256, 4]).to_le_bytes().to_vec(),
                        4 => rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX]).to_le_bytes().to_vec(),
                        _ => vec![rng.next() as u8; width],
                    };
                    tensor.data[chunk..chunk + width].copy_from_slice(&value);
                }
            }
            6 => {
                let dtype = *rng.pick(&[Dtype::F32, Dtype::F32, Dtype::I64]);
                let shape: Vec<usize> = (0..1 + rng.below(3)).map(|_| rng.below(6)).collect();
                let mut tensor = RawTensor { dtype, shape, data: Vec::new() };
                resize(&mut tensor, rng);
                let name = format!("prompt.{}.{}", rng.below(4), rng.pick(&suffixes));
                if tensors.iter().all(|(other, _)| *other != name) {
                    tensors.push((name, tensor));
                }
            }
            _ => {
                let keys = ["format", "prompts", "model", "weights", "prepend_bos", "dtype", "attn_implementation", "producer"];
                let key = rng.pick(&keys).to_string();
                if rng.chance(30) {
                    metadata.remove(&key);
                } else {
                    let value = rng.pick(&[
                        "",
                        "true",
                        "false",
                        "[]",
                        "[\"a\"]",
                        "[\"a\",\"b\",\"c\",\"d\",\"e\"]",
                        "{}",
                        "[1]",
                        "float16",
                        "nul\u{0}",
                    ]);
                    metadata.insert(key, value.to_string());
                }
            }
        }
    }
    Some(serialize(&tensors, metadata))
}

/// Rewrites the JSON header of a safetensors blob after `edit`, keeping the data section.
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Option<Vec<u8>> {
    let size = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let mut header: Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(size)?)?).ok()?;
    edit(&mut header);
    let mut text = header.to_string().into_bytes();
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend_from_slice(&bytes[8 + size..]);
    Some(out)
}

fn header_len(bytes: &[u8]) -> usize {
    bytes.get(..8).map_or(0, |prefix| 8 + u64::from_le_bytes(prefix.try_into().unwrap()).min(1 << 20) as usize)
}

fn exercise_reference(bytes: &[u8], config: &Gpt2Config) -> bool {
    let Ok(reference) = ReferenceFile::from_bytes(bytes.to_vec(), Path::new("fuzz.safetensors")) else { return false };
    let _ = reference.check_model(config, WEIGHTS, false);
    let _ = reference.check_model(config, "sha256:other", false);
    let _ = reference.check_model(config, "sha256:other", true);
    for index in 0..=reference.meta.prompts.len().min(8) {
        let _ = reference.tokens(index);
        let _ = reference.prompt(index);
    }
    let _ = reference.tokens(usize::MAX);
    true
}

#[test]
fn the_reference_reader_never_panics() {
    let config = small_config();
    let mut rng = Rng::new(seed(1));
    let corpus: Vec<Vec<u8>> = vec![
        valid_reference(&mut rng, &[2], false),
        valid_reference(&mut rng, &[1, 3], true),
        valid_reference(&mut rng, &[3, 1, 2], true),
        valid_reference(&mut rng, &[2, 2], false),
    ];
    for valid in &corpus {
        assert!(ReferenceFile::from_bytes(valid.clone(), Path::new("seed")).is_ok(), "the seeds are valid references");
    }
    let (tried, accepted) = fuzz(
        "reference reader",
        seed(1),
        &corpus,
        |rng| {
            if rng.chance(10) {
                return random_reference(rng);
            }
            let mut bytes = rng.pick(&corpus).clone();
            if rng.chance(40) {
                if let Some(edited) = mutate_tensors(rng, &bytes) {
                    return edited;
                }
            }
            if rng.chance(35) {
                if let Some(edited) = edit_header(&bytes, |header| mutate_json(rng, header)) {
                    bytes = edited;
                }
            }
            for _ in 0..1 + rng.below(3) {
                if rng.chance(85) {
                    let focus = header_len(&bytes);
                    mutate_bytes(rng, &mut bytes, &corpus, focus);
                }
            }
            bytes
        },
        |bytes| exercise_reference(bytes, &config),
    );
    assert_eq!(tried, iterations().max(corpus.len()), "every input was tried");
    assert!(accepted > 0 && accepted < tried, "the mutations reach both outcomes ({accepted} of {tried} accepted)");
}

// ---------------------------------------------------------------- config.json

#[test]
fn the_config_reader_never_panics() {
    let fixture = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2/config.json")).unwrap();
    let corpus: Vec<Vec<u8>> = vec![
        fixture,
        br#"{"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}"#.to_vec(),
        br#"{"vocab_size": 5, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 2, "n_inner": 16, "layer_norm_epsilon": 1e-5}"#
            .to_vec(),
    ];
    let (tried, accepted) = fuzz(
        "config reader",
        seed(2),
        &corpus,
        |rng| {
            let mut bytes = rng.pick(&corpus).clone();
            if rng.chance(50) {
                if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
                    for _ in 0..1 + rng.below(3) {
                        mutate_json(rng, &mut value);
                    }
                    bytes = value.to_string().into_bytes();
                }
            }
            if rng.chance(60) {
                for _ in 0..1 + rng.below(3) {
                    mutate_bytes(rng, &mut bytes, &corpus, 0);
                }
            }
            bytes
        },
        |bytes| match Gpt2Config::parse(bytes, Path::new("fuzz/config.json")) {
            Ok(config) => {
                assert!(config.head_dim() >= 1 && config.mlp_width() >= 1);
                true
            }
            Err(_) => false,
        },
    );
    assert_eq!(tried, iterations().max(corpus.len()), "every input was tried");
    assert!(accepted > 0 && accepted < tried, "the mutations reach both outcomes ({accepted} of {tried} accepted)");
}

// ---------------------------------------------------------------- prompts files

#[test]
fn the_prompts_reader_never_panics() {
    let fixture = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/reference/prompts.jsonl")).unwrap();
    let corpus: Vec<Vec<u8>> = vec![
        fixture,
        "{\"prompt\": \"Hello World\"}\n\n\"tab\\there\"\r\n{\"prompt\": \"\\ud83c\\udf0d\", \"id\": 3}\n".as_bytes().to_vec(),
        "\u{feff}\"Grüße\"\n\"\\u0000\"\n".as_bytes().to_vec(),
    ];
    let (tried, accepted) = fuzz(
        "prompts reader",
        seed(3),
        &corpus,
        |rng| {
            let mut bytes = rng.pick(&corpus).clone();
            for _ in 0..1 + rng.below(4) {
                mutate_bytes(rng, &mut bytes, &corpus, 0);
            }
            bytes
        },
        |bytes| match parse_prompts(bytes, Path::new("fuzz/prompts.jsonl")) {
            Ok(prompts) => {
                assert!(!prompts.is_empty(), "Ok means at least one prompt");
                true
            }
            Err(error) => {
                assert!(!format!("{error:#}").is_empty());
                false
            }
        },
    );
    assert_eq!(tried, iterations().max(corpus.len()), "every input was tried");
    assert!(accepted > 0 && accepted < tried, "the mutations reach both outcomes ({accepted} of {tried} accepted)");
}

// ---------------------------------------------------------------- cargo-fuzz seeds

/// The seeds fuzz/ starts from are valid inputs, so that `cargo fuzz run` begins on the paths
/// that matter.
#[test]
fn the_cargo_fuzz_seeds_are_valid_inputs() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let reference = ReferenceFile::open(&seeds.join("fuzz_reference/small.safetensors")).unwrap();
    reference.check_model(&small_config(), WEIGHTS, false).unwrap();
    assert_eq!(reference.prompt(1).unwrap().tokens.len(), 3);
    let config = seeds.join("fuzz_config/config.json");
    Gpt2Config::parse(&std::fs::read(&config).unwrap(), &config).unwrap();
    let prompts = seeds.join("fuzz_prompts/prompts.jsonl");
    assert!(!parse_prompts(&std::fs::read(&prompts).unwrap(), &prompts).unwrap().is_empty());
}
