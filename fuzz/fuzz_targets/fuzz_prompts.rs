//! Any bytes as a prompts file: `parse_prompts` must give Ok (with at least one prompt) or Err,
//! never panic.
#![no_main]
use std::path::Path;

use gpt2_parity::prompts::parse_prompts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(prompts) = parse_prompts(data, Path::new("prompts.jsonl")) {
        assert!(!prompts.is_empty());
    }
});
