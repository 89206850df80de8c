//! Any bytes as a reference file: `ReferenceFile::from_bytes` and everything callable on what it
//! returns must give Ok or Err, never panic.
#![no_main]
use std::path::Path;
use std::sync::OnceLock;

use gpt2_parity::model::Gpt2Config;
use gpt2_parity::reference::ReferenceFile;
use libfuzzer_sys::fuzz_target;

/// The shapes of the seed in fuzz/seeds/fuzz_reference: V = 5, L = 1, D = 4.
fn config() -> &'static Gpt2Config {
    static CONFIG: OnceLock<Gpt2Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let text = br#"{"vocab_size": 5, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 2}"#;
        Gpt2Config::parse(text, Path::new("config.json")).expect("a valid config")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(reference) = ReferenceFile::from_bytes(data.to_vec(), Path::new("fuzz.safetensors")) else { return };
    let weights = reference.meta.weights.clone();
    let _ = reference.check_model(config(), &weights, false);
    let _ = reference.check_model(config(), "sha256:other", true);
    for index in 0..=reference.meta.prompts.len().min(8) {
        let _ = reference.tokens(index);
        let _ = reference.prompt(index);
    }
});
