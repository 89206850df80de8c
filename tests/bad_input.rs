//! The bad-input matrix: every way a user can hand the tool something broken, one test each.
//! A usage, input, model or IO error must exit 2 with exactly one line on stderr that starts
//! with "error: ", names the file / tensor / prompt / option and the fix, never panics, and
//! leaves no report behind. Values that are NaN or Inf in a reference are a failed comparison
//! instead (exit 1) and the report says where.
mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{compare_fixture, fixture_dir, fixture_reference, gpt2_parity, json_report_file, EditableSafetensors};
use serde_json::Value;

/// A scratch directory holding the report path each case passes as `--output`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn report(&self) -> PathBuf {
        self.path("report.json")
    }

    /// Writes `content` to `name` and returns its path.
    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A copy of the fixture model in `name`/, for breaking one of its files.
    fn model_copy(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir(&dir).unwrap();
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fixture_dir().join(file), dir.join(file)).unwrap();
        }
        dir
    }

    /// An empty cache, so that runs without --reference never see another test's references.
    fn cache(&self) -> PathBuf {
        let cache = self.path("cache");
        std::fs::create_dir_all(&cache).unwrap();
        cache
    }
}

/// `compare --model M --output REPORT ARGS...` with the fixture reference unless `reference` is None.
fn compare(scratch: &Scratch, model: &Path, reference: Option<&Path>, args: &[&str]) -> Output {
    let mut command = gpt2_parity();
    command.env("GPT2_PARITY_CACHE", scratch.cache()).arg("compare").args(args).arg("--model").arg(model);
    if let Some(reference) = reference {
        command.arg("--reference").arg(reference);
    }
    command.arg("--output").arg(scratch.report()).output().unwrap()
}

fn compare_fixture_with(scratch: &Scratch, args: &[&str]) -> Output {
    compare(scratch, &fixture_dir(), Some(&fixture_reference()), args)
}

/// Exit 2, exactly one stderr line "error: ..." naming each of `names`, no panic, no report file.
#[track_caller]
fn assert_one_line_error(output: &Output, report: &Path, names: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "expected exit 2; stderr: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "stderr does not start with \"error: \": {stderr}");
    for name in names {
        assert!(stderr.contains(name), "stderr does not name {name:?}: {stderr}");
    }
    eprintln!("{}", lines[0]);
    assert!(output.stdout.is_empty(), "stdout is empty on error: {}", String::from_utf8_lossy(&output.stdout));
    assert!(!report.exists(), "no report is left behind on exit 2 ({})", report.display());
    stderr
}

/// Clap's own errors are several lines by design: exit 2 and no panic is the contract there.
#[track_caller]
fn assert_usage_error(output: &Output, report: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "expected exit 2; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!report.exists());
}

/// A copy of the fixture reference, edited.
fn edited_reference(scratch: &Scratch, edit: impl FnOnce(&mut EditableSafetensors)) -> PathBuf {
    let mut reference = EditableSafetensors::read(&fixture_reference());
    edit(&mut reference);
    let path = scratch.path("edited.safetensors");
    reference.write(&path);
    path
}

/// A copy of the fixture model whose model.safetensors is edited.
fn edited_model(scratch: &Scratch, edit: impl FnOnce(&mut EditableSafetensors)) -> PathBuf {
    let dir = scratch.model_copy("model");
    let weights = dir.join("model.safetensors");
    let mut editable = EditableSafetensors::read(&weights);
    edit(&mut editable);
    editable.write(&weights);
    dir
}

// ---------------------------------------------------------------- prompts

#[test]
fn empty_prompt_without_reference() {
    let scratch = Scratch::new();
    let output = compare(&scratch, &fixture_dir(), None, &[""]);
    assert_one_line_error(&output, &scratch.report(), &["prompt \"\"", "empty", "--prepend-bos"]);
}

#[test]
fn empty_prompt_with_prepend_bos_is_accepted() {
    // <|endoftext|> alone is one token to predict from: the bundled script makes the reference.
    let scratch = Scratch::new();
    let output = compare(&scratch, &fixture_dir(), None, &["", "--prepend-bos", "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_report_file(&scratch.report());
    assert_eq!(report["prompts"][0]["tokens"], serde_json::json!([50256]));
}

#[test]
fn empty_prompt_with_reference() {
    let scratch = Scratch::new();
    let output = compare_fixture_with(&scratch, &[""]);
    assert_one_line_error(&output, &scratch.report(), &["prompt \"\"", "not in reference", "tiny-gpt2.safetensors"]);
}

#[test]
fn empty_prompt_in_reference_command() {
    let scratch = Scratch::new();
    let output =
        gpt2_parity().arg("reference").arg("").arg("--model").arg(fixture_dir()).arg("--output").arg(scratch.report()).output().unwrap();
    assert_one_line_error(&output, &scratch.report(), &["prompt \"\"", "--prepend-bos"]);
}

#[test]
fn prompt_longer_than_n_positions() {
    let scratch = Scratch::new();
    let long = vec!["word"; 40].join(" ");
    let output = compare(&scratch, &fixture_dir(), None, &[&long]);
    assert_one_line_error(&output, &scratch.report(), &["prompt \"word word", "40 tokens", "n_positions = 32", "shorten"]);
}

#[test]
fn no_prompts_at_all_without_reference() {
    let scratch = Scratch::new();
    let output = compare(&scratch, &fixture_dir(), None, &[]);
    assert_one_line_error(&output, &scratch.report(), &["no prompts", "--prompts-file"]);
}

#[test]
fn prompts_file_missing() {
    let scratch = Scratch::new();
    let missing = scratch.path("missing.jsonl");
    let output = compare_fixture_with(&scratch, &["--prompts-file", missing.to_str().unwrap()]);
    assert_one_line_error(&output, &scratch.report(), &["prompts file", "missing.jsonl", "--prompts-file"]);
}

#[test]
fn prompts_file_is_a_directory() {
    let scratch = Scratch::new();
    let dir = scratch.path("prompts-dir");
    std::fs::create_dir(&dir).unwrap();
    let output = compare_fixture_with(&scratch, &["--prompts-file", dir.to_str().unwrap()]);
    assert_one_line_error(&output, &scratch.report(), &["prompts file", "prompts-dir"]);
}

#[test]
fn prompts_file_empty() {
    for (name, content) in [("empty.jsonl", ""), ("blank.jsonl", "\n   \n\t\n")] {
        let scratch = Scratch::new();
        let file = scratch.file(name, content.as_bytes());
        let output = compare_fixture_with(&scratch, &["--prompts-file", file.to_str().unwrap()]);
        assert_one_line_error(&output, &scratch.report(), &[name, "no prompts", "one JSON string per line"]);
    }
}

#[test]
fn prompts_file_not_utf8_names_the_line() {
    let scratch = Scratch::new();
    let file = scratch.file("latin1.jsonl", b"\"Hello World\"\n\"Gr\xfc\xdfe\"\n");
    let output = compare_fixture_with(&scratch, &["--prompts-file", file.to_str().unwrap()]);
    assert_one_line_error(&output, &scratch.report(), &["latin1.jsonl", "not UTF-8", "line 2", "save it as UTF-8"]);
}

#[test]
fn prompts_file_bad_jsonl_names_the_line() {
    let cases: [(&str, &[&str]); 4] = [
        ("\"Hello World\"\n\n{\"prompt\": \"Hello\"\nHello\n", &["line 3", "not JSON", "JSON string"]),
        ("\"Hello World\"\nHello\n", &["line 2", "not JSON"]),
        ("\"Hello World\"\n42\n", &["line 2", "expected a JSON string"]),
        ("{\"text\": \"Hello World\"}\n", &["line 1", "no string field \"prompt\""]),
    ];
    for (content, names) in cases {
        let scratch = Scratch::new();
        let file = scratch.file("bad.jsonl", content.as_bytes());
        let output = compare_fixture_with(&scratch, &["--prompts-file", file.to_str().unwrap()]);
        let mut names = names.to_vec();
        names.push("bad.jsonl");
        assert_one_line_error(&output, &scratch.report(), &names);
    }
}

#[test]
fn prompts_file_with_a_byte_order_mark_is_read() {
    let scratch = Scratch::new();
    let file = scratch.file("bom.jsonl", "\u{feff}\"Hello World\"\r\n".as_bytes());
    let output = compare_fixture_with(&scratch, &["--prompts-file", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_report_file(&scratch.report());
    assert_eq!(report["prompts"][0]["prompt"], "Hello World");
}

// ---------------------------------------------------------------- model files

#[test]
fn model_directory_missing() {
    let scratch = Scratch::new();
    let output = compare(&scratch, &scratch.path("no-such-model"), Some(&fixture_reference()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["no-such-model", "does not exist", "config.json"]);
}

#[test]
fn model_is_a_file() {
    let scratch = Scratch::new();
    let output = compare(&scratch, &fixture_dir().join("config.json"), Some(&fixture_reference()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["config.json", "is a file", "directory"]);
}

#[test]
fn model_directory_lacks_a_file() {
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let scratch = Scratch::new();
        let dir = scratch.model_copy("model");
        std::fs::remove_file(dir.join(file)).unwrap();
        let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
        assert_one_line_error(&output, &scratch.report(), &[dir.to_str().unwrap(), &format!("has no {file}")]);
    }
}

#[test]
fn hub_id_not_cached_while_offline() {
    let scratch = Scratch::new();
    let output = gpt2_parity()
        .env("HF_HUB_CACHE", scratch.path("hub"))
        .args(["compare", "Hello World", "--model", "no-such-org/no-such-gpt2", "--output"])
        .arg(scratch.report())
        .output()
        .unwrap();
    assert_one_line_error(&output, &scratch.report(), &["no-such-org/no-such-gpt2", "HF_HUB_OFFLINE", "huggingface-cli download"]);
}

#[test]
fn config_not_json() {
    let scratch = Scratch::new();
    let dir = scratch.model_copy("model");
    std::fs::write(dir.join("config.json"), "{\"vocab_size\": 50257,").unwrap();
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["config.json", "not a usable GPT-2 config.json", "re-download"]);
}

#[test]
fn config_lacks_a_field() {
    let scratch = Scratch::new();
    let dir = scratch.model_copy("model");
    let mut config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("n_head");
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["config.json", "missing field `n_head`"]);
}

#[test]
fn config_with_impossible_values() {
    let cases: [(&str, Value, &str); 7] = [
        ("n_head", serde_json::json!(5), "not divisible by n_head = 5"),
        ("n_embd", serde_json::json!(i64::MAX), "n_embd = 9223372036854775807 is out of range"),
        ("n_layer", serde_json::json!(0), "n_layer = 0 is out of range"),
        ("vocab_size", serde_json::json!("50257"), "invalid type"),
        ("activation_function", serde_json::json!("relu"), "\"relu\" is not supported"),
        ("layer_norm_epsilon", serde_json::json!(0.0), "layer_norm_epsilon = 0 must be a positive number"),
        ("tie_word_embeddings", serde_json::json!(false), "tie_word_embeddings differs from GPT-2's default"),
    ];
    for (field, value, message) in cases {
        let scratch = Scratch::new();
        let dir = scratch.model_copy("model");
        let mut config: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        config[field] = value;
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
        assert_one_line_error(&output, &scratch.report(), &["config.json", message]);
    }
}

// ---------------------------------------------------------------- weights

#[test]
fn weights_truncated() {
    let scratch = Scratch::new();
    let dir = scratch.model_copy("model");
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["model.safetensors", "not a readable safetensors file", "re-download"]);
}

#[test]
fn weights_empty() {
    let scratch = Scratch::new();
    let dir = scratch.model_copy("model");
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["model.safetensors", "not a readable safetensors file"]);
}

#[test]
fn weights_with_a_corrupt_header() {
    type Corruption = (&'static str, fn(&mut Vec<u8>));
    let corruptions: [Corruption; 3] = [
        ("garbage JSON", |bytes| bytes[8..20].copy_from_slice(b"}}}}}}}}}}}}")),
        ("header length beyond the file", |bytes| bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes())),
        ("offsets beyond the data", |bytes| {
            let text = String::from_utf8_lossy(&bytes[8..3728]).replace("\"data_offsets\":[0,", "\"data_offsets\":[9,");
            bytes.splice(8..3728, text.into_bytes());
        }),
    ];
    for (what, corrupt) in corruptions {
        let scratch = Scratch::new();
        let dir = scratch.model_copy("model");
        let weights = dir.join("model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        corrupt(&mut bytes);
        std::fs::write(&weights, &bytes).unwrap();
        let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
        eprintln!("{what}: {}", String::from_utf8_lossy(&output.stderr).trim_end());
        assert_one_line_error(&output, &scratch.report(), &["model.safetensors", "not a readable safetensors file"]);
    }
}

// The edited weights have another digest; --allow-other-weights lets the run reach the tensors.

#[test]
fn weights_with_a_wrong_dtype() {
    let scratch = Scratch::new();
    let dir = edited_model(&scratch, |model| {
        model.tensors.get_mut("transformer.h.1.ln_2.weight").unwrap().0 = safetensors::Dtype::I32;
    });
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &["--allow-other-weights"]);
    assert_one_line_error(&output, &scratch.report(), &["transformer.h.1.ln_2.weight", "dtype I32", "F32, F16 or BF16"]);
}

#[test]
fn weights_with_a_wrong_shape() {
    let scratch = Scratch::new();
    let dir = edited_model(&scratch, |model| {
        model.tensors.get_mut("transformer.wpe.weight").unwrap().1 = vec![16, 64];
    });
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &["--allow-other-weights"]);
    assert_one_line_error(&output, &scratch.report(), &["transformer.wpe.weight", "[16, 64]", "[32, 32]", "config.json"]);
}

#[test]
fn weights_with_a_missing_tensor() {
    let scratch = Scratch::new();
    let dir = edited_model(&scratch, |model| {
        model.tensors.remove("transformer.h.2.mlp.c_fc.bias").unwrap();
    });
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &["--allow-other-weights"]);
    assert_one_line_error(&output, &scratch.report(), &["transformer.h.2.mlp.c_fc.bias", "missing"]);
}

#[test]
fn weights_with_an_unexpected_tensor() {
    let scratch = Scratch::new();
    let dir = edited_model(&scratch, |model| {
        model.tensors.insert("transformer.h.3.ln_1.weight".to_owned(), (safetensors::Dtype::F32, vec![32], vec![0; 128]));
    });
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &["--allow-other-weights"]);
    assert_one_line_error(&output, &scratch.report(), &["transformer.h.3.ln_1.weight", "unexpected tensor"]);
}

// Enabled once run/compare.rs calls `Checkpoint::audit` right after `Checkpoint::open`: then a
// broken tensor is named before the digest check and before the bundled script runs on it.
#[test]
fn weights_with_a_wrong_dtype_are_named_before_the_reference_is_checked_or_made() {
    for reference in [Some(fixture_reference()), None] {
        let scratch = Scratch::new();
        let dir = edited_model(&scratch, |model| {
            model.tensors.get_mut("transformer.h.1.ln_2.weight").unwrap().0 = safetensors::Dtype::I32;
        });
        let output = compare(&scratch, &dir, reference.as_deref(), &["Hello World"]);
        assert_one_line_error(&output, &scratch.report(), &["transformer.h.1.ln_2.weight", "dtype I32"]);
    }
}

#[test]
fn weights_from_another_model_are_refused_by_digest() {
    let scratch = Scratch::new();
    let dir = edited_model(&scratch, |model| {
        model.map_f32("transformer.ln_f.bias", |_, value| value + 1.0);
    });
    let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["tiny-gpt2.safetensors", "made from weights sha256:", "--allow-other-weights"]);
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn tokenizer_broken() {
    let truncated = std::fs::read(fixture_dir().join("tokenizer.json")).unwrap()[..1000].to_vec();
    for content in [b"not json at all".to_vec(), b"{}".to_vec(), truncated] {
        let scratch = Scratch::new();
        let dir = scratch.model_copy("model");
        std::fs::write(dir.join("tokenizer.json"), content).unwrap();
        let output = compare(&scratch, &dir, Some(&fixture_reference()), &[]);
        assert_one_line_error(&output, &scratch.report(), &["tokenizer.json", "not a usable tokenizer.json", "re-download"]);
    }
}

// ---------------------------------------------------------------- reference

#[test]
fn reference_missing() {
    let scratch = Scratch::new();
    let missing = scratch.path("missing.safetensors");
    let output = compare(&scratch, &fixture_dir(), Some(&missing), &[]);
    assert_one_line_error(&output, &scratch.report(), &["missing.safetensors", "cannot open reference", "--reference"]);
}

#[test]
fn reference_is_a_directory() {
    let scratch = Scratch::new();
    let output = compare(&scratch, &fixture_dir(), Some(scratch.dir.path()), &[]);
    assert_one_line_error(&output, &scratch.report(), &["is a directory", ".safetensors"]);
}

#[test]
fn reference_not_safetensors() {
    let full = std::fs::read(fixture_reference()).unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        ("text", b"prompt,logits\nHello,1.0\n".to_vec()),
        ("truncated", full[..full.len() - 1000].to_vec()),
        ("header only", full[..4096].to_vec()),
    ];
    for (what, bytes) in cases {
        let scratch = Scratch::new();
        let path = scratch.file(&format!("{}.safetensors", what.replace(' ', "-")), &bytes);
        let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
        eprintln!("{what}: {}", String::from_utf8_lossy(&output.stderr).trim_end());
        assert_one_line_error(&output, &scratch.report(), &[path.to_str().unwrap(), "not a readable safetensors file", "regenerate"]);
    }
}

#[test]
fn reference_with_a_wrong_format_tag() {
    let scratch = Scratch::new();
    let path = edited_reference(&scratch, |reference| {
        reference.metadata.insert("format".to_owned(), "gpt2-parity-reference/2".to_owned());
    });
    let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
    assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", "\"gpt2-parity-reference/2\"", "gpt2-parity-reference/1"]);
}

#[test]
fn reference_without_metadata() {
    let scratch = Scratch::new();
    let path = edited_reference(&scratch, |reference| reference.metadata.clear());
    let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
    assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", "no metadata key \"format\"", "reference-format.md"]);
}

#[test]
fn reference_with_malformed_metadata_or_shapes() {
    type Edit = fn(&mut EditableSafetensors);
    let cases: [(&str, Edit, &[&str]); 8] = [
        (
            "prompts not JSON",
            |r| drop(r.metadata.insert("prompts".into(), "[\"Hello World\"".into())),
            &["metadata \"prompts\"", "JSON array"],
        ),
        ("no prompts", |r| drop(r.metadata.insert("prompts".into(), "[]".into())), &["holds no prompts"]),
        ("prepend_bos", |r| drop(r.metadata.insert("prepend_bos".into(), "yes".into())), &["\"prepend_bos\" is \"yes\""]),
        (
            "dtype",
            |r| drop(r.metadata.insert("dtype".into(), "int8".into())),
            &["computed in int8", "float32, float64, float16 or bfloat16"],
        ),
        ("producer", |r| drop(r.metadata.insert("producer".into(), "{python".into())), &["\"producer\" is not JSON"]),
        ("weights", |r| drop(r.metadata.remove("weights")), &["no metadata key \"weights\""]),
        (
            "tokens rank",
            |r| drop(r.tensors.insert("prompt.2.tokens".into(), (safetensors::Dtype::I64, vec![1, 1], 0i64.to_le_bytes().to_vec()))),
            &["prompt.2.tokens", "expected [T]"],
        ),
        (
            "resid shape",
            |r| {
                let (_, shape, _) = r.tensors.get_mut("prompt.0.resid").unwrap();
                shape.truncate(2);
                shape[1] *= 32;
            },
            &["prompt.0.resid", "expected [L+1, 2, D]"],
        ),
    ];
    for (what, edit, names) in cases {
        let scratch = Scratch::new();
        let path = edited_reference(&scratch, edit);
        let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
        eprintln!("{what}:");
        let mut names = names.to_vec();
        names.push("edited.safetensors");
        assert_one_line_error(&output, &scratch.report(), &names);
    }
}

#[test]
fn reference_with_a_missing_tensor() {
    for name in ["prompt.3.logits", "prompt.5.tokens"] {
        let scratch = Scratch::new();
        let path = edited_reference(&scratch, |reference| {
            reference.tensors.remove(name).unwrap();
        });
        let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
        assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", name, "lacks tensor", "regenerate"]);
    }
}

#[test]
fn reference_with_a_wrong_dtype() {
    let scratch = Scratch::new();
    let path = edited_reference(&scratch, |reference| {
        reference.tensors.get_mut("prompt.1.logits").unwrap().0 = safetensors::Dtype::I32;
    });
    let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
    assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", "prompt.1.logits", "dtype I32", "F32"]);
}

#[test]
fn reference_with_other_tokens() {
    let scratch = Scratch::new();
    let path = edited_reference(&scratch, |reference| reference.set_i64("prompt.0.tokens", &[15496, 2160]));
    let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
    assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", "\"Hello World\"", "[15496, 2160]", "[15496, 2159]"]);
}

#[test]
fn reference_with_another_vocab_size() {
    let scratch = Scratch::new();
    let path = edited_reference(&scratch, |reference| {
        // Every prompt's logits lose their last vocabulary column: [T, 50257] -> [T, 50256].
        for (name, (_, shape, data)) in reference.tensors.iter_mut() {
            if name.ends_with(".logits") {
                let (rows, columns) = (shape[0], shape[1]);
                let kept: Vec<u8> = data.chunks_exact(columns * 4).flat_map(|row| row[..(columns - 1) * 4].to_vec()).collect();
                *data = kept;
                *shape = vec![rows, columns - 1];
            }
        }
    });
    let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
    assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", "prompt.0.logits", "vocabulary size 50256", "50257"]);
}

#[test]
fn reference_with_a_shape_that_disagrees_with_its_tokens() {
    let scratch = Scratch::new();
    let path = edited_reference(&scratch, |reference| {
        let (_, shape, data) = reference.tensors.get_mut("prompt.0.logits").unwrap();
        let columns = shape[1];
        data.truncate(columns * 4);
        *shape = vec![1, columns];
    });
    let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
    assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", "prompt.0.logits", "[1, 50257]", "[2, V]"]);
}

#[test]
fn reference_from_another_model() {
    let scratch = Scratch::new();
    let other = format!("sha256:{}", "0".repeat(64));
    let path = edited_reference(&scratch, |reference| {
        reference.metadata.insert("weights".to_owned(), other.clone());
    });
    let output = compare(&scratch, &fixture_dir(), Some(&path), &[]);
    assert_one_line_error(&output, &scratch.report(), &["edited.safetensors", &other, "--allow-other-weights"]);
}

#[test]
fn reference_with_nan_or_inf_fails_with_exit_1_and_says_where() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let scratch = Scratch::new();
        // Prompt 1 ("Grüße, 世界 🌍🚀"), position 2, vocabulary id 7.
        let path = edited_reference(&scratch, |reference| {
            reference.map_f32("prompt.1.logits", |index, value| if index == 2 * 50257 + 7 { bad } else { value });
        });
        let output = compare(&scratch, &fixture_dir(), Some(&path), &["--format", "json"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{bad}: a non-finite value is a failed comparison; stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let report = json_report_file(&scratch.report());
        assert_eq!(report["passed"], false);
        let prompts = report["prompts"].as_array().unwrap();
        assert_eq!(prompts[0]["passed"], true, "prompt 0 is untouched");
        assert_eq!(prompts[1]["passed"], false);
        let against_reference: Vec<&Value> = prompts[1]["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|comparison| comparison["name"].as_str().unwrap().ends_with("-vs-reference"))
            .collect();
        assert_eq!(against_reference.len(), 2);
        for comparison in against_reference {
            assert_eq!(comparison["non_finite"], 1, "{bad}: {comparison}");
            assert_eq!(comparison["passed"], false);
            let at = &comparison["first_non_finite_at"];
            assert_eq!(at["position"], 2, "{bad}: where the first non-finite value sits: {comparison}");
            assert_eq!(at["token_id"], 7);
            assert!(at["token"].is_string());
        }
    }
}

// ---------------------------------------------------------------- Python and the reference script

/// A stand-in for Python that fails the way `stderr` says.
fn failing_python(scratch: &Scratch, stderr: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = scratch.file("python", format!("#!/bin/sh\ncat >&2 <<'EOF'\n{stderr}\nEOF\nexit 1\n").as_bytes());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Exit 2 and one error line last on stderr (after the "making the reference" progress line).
#[track_caller]
fn assert_script_error(output: &Output, report: &Path, names: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]), "the error comes last: {stderr}");
    assert!(stderr.lines().all(|line| line.starts_with("error: ") || line.starts_with("making the reference")), "{stderr}");
    for name in names {
        assert!(errors[0].contains(name), "the error names {name:?}: {stderr}");
    }
    eprintln!("{}", errors[0]);
    assert!(!report.exists());
}

#[test]
fn the_reference_script_failing_is_one_error_line_with_its_message() {
    let scratch = Scratch::new();
    let python = failing_python(&scratch, "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory");
    let output = compare(&scratch, &fixture_dir(), None, &["Hello World", "--python", python.to_str().unwrap()]);
    assert_script_error(&output, &scratch.report(), &["reference script failed", "tiny-gpt2", "RuntimeError: CUDA out of memory"]);
}

#[test]
fn a_python_without_torch_names_the_setup() {
    let scratch = Scratch::new();
    let python = failing_python(&scratch, "ModuleNotFoundError: No module named 'torch'");
    let output = compare(&scratch, &fixture_dir(), None, &["Hello World", "--python", python.to_str().unwrap()]);
    assert_script_error(&output, &scratch.report(), &["No module named 'torch'", "make setup", "--reference"]);
}

#[test]
fn a_python_that_does_not_exist_names_the_setup() {
    let scratch = Scratch::new();
    let python = scratch.path("no-such-python");
    let output = compare(&scratch, &fixture_dir(), None, &["Hello World", "--python", python.to_str().unwrap()]);
    assert_one_line_error(&output, &scratch.report(), &["no-such-python", "does not exist", "make setup"]);
}

#[test]
fn a_python_that_cannot_be_run_names_the_setup() {
    let scratch = Scratch::new();
    let python = scratch.file("python", b"not executable");
    let output = compare(&scratch, &fixture_dir(), None, &["Hello World", "--python", python.to_str().unwrap()]);
    assert_script_error(&output, &scratch.report(), &["cannot run", "python", "make setup"]);
}

#[test]
fn a_cache_directory_that_cannot_be_created() {
    let scratch = Scratch::new();
    let file = scratch.file("a-file", b"");
    let output = gpt2_parity()
        .env("GPT2_PARITY_CACHE", file.join("cache"))
        .args(["compare", "Hello World", "--model"])
        .arg(fixture_dir())
        .arg("--output")
        .arg(scratch.report())
        .output()
        .unwrap();
    assert_one_line_error(&output, &scratch.report(), &["cannot create directory", "a-file/cache/references"]);
}

// ---------------------------------------------------------------- output

#[test]
fn output_in_a_missing_directory_is_checked_before_any_model_work() {
    let scratch = Scratch::new();
    let report = scratch.path("no-such-dir").join("report.json");
    // The model does not exist either: the output is checked first.
    let output = gpt2_parity().args(["compare", "Hello World", "--model", "./no/such/model", "--output"]).arg(&report).output().unwrap();
    assert_one_line_error(&output, &report, &["report.json", "no-such-dir", "does not exist", "--output"]);
}

#[test]
fn output_in_a_read_only_directory() {
    let scratch = Scratch::new();
    let read_only = scratch.path("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    // root writes anywhere: then use a directory no one can create files in.
    let probe = read_only.join("probe");
    let dir = if std::fs::write(&probe, b"").is_ok() { PathBuf::from("/proc") } else { read_only.clone() };
    let report = dir.join("gpt2-parity-report.json");
    let output = gpt2_parity().args(["compare", "Hello World", "--model", "./no/such/model", "--output"]).arg(&report).output().unwrap();
    assert_one_line_error(&output, &report, &["gpt2-parity-report.json", dir.to_str().unwrap(), "not writable", "--output"]);
    std::fs::set_permissions(&read_only, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn output_that_is_a_directory() {
    let scratch = Scratch::new();
    let dir = scratch.path("report-dir");
    std::fs::create_dir(&dir).unwrap();
    let output = compare_fixture().arg("--output").arg(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("report-dir") && stderr.contains("it is a directory"), "{stderr}");
    assert!(dir.is_dir() && std::fs::read_dir(&dir).unwrap().next().is_none(), "the directory is left as it was");
    let leftovers: Vec<_> = std::fs::read_dir(scratch.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".gpt2-parity-"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file is left behind: {leftovers:?}");
}

#[test]
fn an_error_leaves_an_existing_report_untouched() {
    let scratch = Scratch::new();
    std::fs::write(scratch.report(), b"the previous report").unwrap();
    let output = compare_fixture_with(&scratch, &["not in the reference"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(std::fs::read(scratch.report()).unwrap(), b"the previous report");
}

#[test]
fn reference_command_output_in_a_missing_directory() {
    let scratch = Scratch::new();
    let target = scratch.path("no-such-dir").join("ref.safetensors");
    let output =
        gpt2_parity().args(["reference", "Hello World", "--model"]).arg(fixture_dir()).arg("--output").arg(&target).output().unwrap();
    assert_one_line_error(&output, &target, &["ref.safetensors", "does not exist"]);
}

#[test]
fn a_cuda_device_that_does_not_exist() {
    let scratch = Scratch::new();
    let output = compare_fixture_with(&scratch, &["--device", "cuda:99"]);
    assert_one_line_error(&output, &scratch.report(), &["--device cuda:99", "CUDA device", "--device cpu"]);
}

#[test]
fn prepend_bos_with_a_reference_made_without_it() {
    let scratch = Scratch::new();
    let output = compare_fixture_with(&scratch, &["--prepend-bos"]);
    assert_one_line_error(&output, &scratch.report(), &["--prepend-bos", "tiny-gpt2.safetensors", "<|endoftext|>", "drop the flag"]);
}

// ---------------------------------------------------------------- command line (clap)

#[test]
fn bad_tolerances_are_usage_errors() {
    let cases: [&[&str]; 8] = [
        &["--atol=-1"],
        &["--rtol=-0.0001"],
        &["--rtol", "NaN"],
        &["--rtol", "nan"],
        &["--atol", "inf"],
        &["--atol", "abc"],
        &["--rtol", ""],
        &["--atol", "1e-4x"],
    ];
    for args in cases {
        let scratch = Scratch::new();
        let output = compare_fixture_with(&scratch, args);
        assert_usage_error(&output, &scratch.report());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let option = args[0].split('=').next().unwrap();
        assert!(stderr.contains(option), "{args:?}: the error names the option: {stderr}");
    }
    // `--atol -1` (a space, not `=`) reads -1 as a flag today: still exit 2, without a panic.
    let scratch = Scratch::new();
    assert_usage_error(&compare_fixture_with(&scratch, &["--atol", "-1"]), &scratch.report());
}

#[test]
fn unknown_flags_and_values_are_usage_errors() {
    let cases: [&[&str]; 5] = [&["--no-such-flag"], &["--format", "yaml"], &["--device", "tpu"], &["--atol"], &["--prepend-bos=maybe"]];
    for args in cases {
        let scratch = Scratch::new();
        let output = compare_fixture_with(&scratch, args);
        assert_usage_error(&output, &scratch.report());
    }
    let scratch = Scratch::new();
    assert_usage_error(&compare_fixture_with(&scratch, &["--threads", "0"]), &scratch.report());
    let output = gpt2_parity().args(["reference", "Hello World", "--model"]).arg(fixture_dir()).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "reference needs --output");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--output"));
    let output = gpt2_parity().arg("frobnicate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = gpt2_parity().output().unwrap();
    assert_eq!(output.status.code(), Some(2), "no subcommand");
}

#[test]
fn arguments_that_are_not_utf8_are_refused() {
    use std::os::unix::ffi::OsStringExt;
    let scratch = Scratch::new();
    let output = gpt2_parity()
        .arg("compare")
        .arg(OsString::from_vec(b"Gr\xfc\xdfe".to_vec()))
        .arg("--model")
        .arg(fixture_dir())
        .arg("--output")
        .arg(scratch.report())
        .output()
        .unwrap();
    assert_usage_error(&output, &scratch.report());
}
