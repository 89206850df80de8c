//! Loading by Hub id from a cache laid out as huggingface_hub lays it out (refs/, snapshots/
//! with links into blobs/), with the Hub's own GPT-2 weight names, and no network.
mod common;

use std::path::{Path, PathBuf};

use common::{fixture_dir, fixture_reference, json_stdout, EditableSafetensors};
use predicates::prelude::*;
use serde_json::Value;

const MODEL_ID: &str = "gpt2-parity-test/tiny-gpt2";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Writes the fixture into `hub_cache` as the Hub's gpt2 repository looks: unprefixed names
/// plus the attn.bias / attn.masked_bias buffers, files as links into blobs/.
fn fill_cache(hub_cache: &Path) {
    let repo = hub_cache.join("models--gpt2-parity-test--tiny-gpt2");
    let (blobs, snapshot) = (repo.join("blobs"), repo.join("snapshots").join(COMMIT));
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();

    let mut weights = EditableSafetensors::read(&fixture_dir().join("model.safetensors"));
    weights.tensors = std::mem::take(&mut weights.tensors)
        .into_iter()
        .map(|(name, tensor)| (name.strip_prefix("transformer.").unwrap_or(&name).to_owned(), tensor))
        .collect();
    let positions = 32usize;
    let causal: Vec<u8> =
        (0..positions * positions).flat_map(|i| if i % positions <= i / positions { 1f32 } else { 0f32 }.to_le_bytes()).collect();
    for layer in 0..3 {
        weights.tensors.insert(format!("h.{layer}.attn.bias"), (safetensors::Dtype::F32, vec![1, 1, positions, positions], causal.clone()));
    }
    weights.tensors.insert("h.0.attn.masked_bias".into(), (safetensors::Dtype::F32, vec![], (-1e4f32).to_le_bytes().to_vec()));
    let staged = hub_cache.join("staged.safetensors");
    weights.write(&staged);

    for (name, source) in [
        ("config.json", fixture_dir().join("config.json")),
        ("tokenizer.json", fixture_dir().join("tokenizer.json")),
        ("model.safetensors", staged.clone()),
    ] {
        let blob = blobs.join(format!("blob-{name}"));
        std::fs::copy(&source, &blob).unwrap();
        std::os::unix::fs::symlink(Path::new("../../blobs").join(format!("blob-{name}")), snapshot.join(name)).unwrap();
    }
    std::fs::remove_file(staged).unwrap();
}

fn compare_by_hub_id(env: &[(&str, &Path)]) -> std::process::Output {
    let mut command = common::binary();
    for name in ["HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE"] {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    // Any attempt to reach a hub would fail at once against this endpoint.
    command
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args(["compare", "--model", MODEL_ID, "--allow-other-weights", "--format", "json", "--reference"])
        .arg(fixture_reference())
        .output()
        .unwrap()
}

fn assert_parity(output: &std::process::Output) -> Value {
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = json_stdout(output);
    assert_eq!(report["model"]["source"], MODEL_ID);
    for prompt in report["prompts"].as_array().unwrap() {
        let unprocessed = &prompt["comparisons"][0];
        assert!(unprocessed["max_abs_diff"].as_f64().unwrap() <= 1e-5, "{unprocessed}");
    }
    report
}

#[test]
fn a_cached_hub_model_loads_by_id_through_hf_hub_cache_with_the_network_off() {
    let cache = tempfile::tempdir().unwrap();
    fill_cache(cache.path());
    let offline = PathBuf::from("1");
    assert_parity(&compare_by_hub_id(&[("HF_HUB_CACHE", cache.path()), ("HF_HUB_OFFLINE", &offline)]));
    // Cache-first: even without HF_HUB_OFFLINE, a cached model never touches the network.
    let report = assert_parity(&compare_by_hub_id(&[("HF_HUB_CACHE", cache.path())]));
    assert_ne!(report["model"]["weights"], report["reference"]["weights"], "the Hub layout is another file with the same numbers");
}

#[test]
fn hf_home_locates_the_cache_as_huggingface_hub_does() {
    let home = tempfile::tempdir().unwrap();
    fill_cache(&home.path().join("hub"));
    assert_parity(&compare_by_hub_id(&[("HF_HOME", home.path()), ("HF_HUB_OFFLINE", Path::new("1"))]));
}

#[test]
fn an_uncached_model_while_offline_is_one_line_naming_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    let output = compare_by_hub_id(&[("HF_HUB_CACHE", cache.path()), ("HF_HUB_OFFLINE", Path::new("1"))]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(predicate::str::contains(MODEL_ID).and(predicate::str::contains("HF_HUB_OFFLINE")).eval(&stderr), "{stderr}");
}
