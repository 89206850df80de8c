//! Any bytes as config.json: `Gpt2Config::parse` must give Ok or Err, never panic, and what it
//! accepts must have usable shapes.
#![no_main]
use std::path::Path;

use gpt2_parity::model::Gpt2Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = Gpt2Config::parse(data, Path::new("config.json")) {
        assert!(config.head_dim() >= 1 && config.mlp_width() >= 1);
    }
});
