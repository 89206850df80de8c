//! The reference cache is never trusted blindly: `compare` without `--reference` keeps what the
//! bundled script made in GPT2_PARITY_CACHE/references/, with a `.sha256` checksum beside each
//! entry. An entry that is truncated, bit-flipped, replaced, or lacks its checksum is rebuilt; a
//! run killed while making one leaves nothing that a later run would use.
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use common::{fixture_dir, json_stdout};
use gpt2_parity::reference::ReferenceFile;

fn compare(cache: &Path) -> std::process::Command {
    let mut command = std::process::Command::cargo_bin("gpt2-parity").unwrap();
    command
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("GPT2_PARITY_PYTHON")
        .env("GPT2_PARITY_CACHE", cache)
        .args(["compare", "Hello World", "--format", "json", "--model"])
        .arg(fixture_dir());
    command
}

struct Run {
    rebuilt: bool,
    stderr: String,
}

/// Runs compare; it must pass with exit 0.
fn run(cache: &Path) -> Run {
    let output: Output = compare(cache).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let report = json_stdout(&output);
    assert_eq!(report["passed"], true);
    assert_eq!(report["reference"]["bundled"], true);
    Run { rebuilt: stderr.contains("making the reference"), stderr }
}

/// The one cache entry: (reference, checksum).
fn entry(cache: &Path) -> (PathBuf, PathBuf) {
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.join("references"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let reference = entries[0].clone();
    let mut checksum = reference.clone().into_os_string();
    checksum.push(".sha256");
    (reference, PathBuf::from(checksum))
}

#[test]
fn a_corrupt_cache_entry_is_detected_and_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path();

    let first = run(cache);
    assert!(first.rebuilt, "the first run makes the reference: {}", first.stderr);
    let (reference, checksum) = entry(cache);
    assert!(checksum.is_file(), "a checksum is recorded beside the entry");
    let good = std::fs::read(&reference).unwrap();

    let second = run(cache);
    assert!(!second.rebuilt, "an intact entry is used: {}", second.stderr);

    type Corruption = (&'static str, fn(&Path, &Path, &[u8]));
    let corruptions: [Corruption; 5] = [
        ("truncated to half", |reference, _, good| std::fs::write(reference, &good[..good.len() / 2]).unwrap()),
        ("one bit flipped in the logits", |reference, _, good| {
            // The last bytes are tensor data: still a readable reference, with one wrong value.
            let mut bytes = good.to_vec();
            let last = bytes.len() - 3;
            bytes[last] ^= 0x40;
            std::fs::write(reference, bytes).unwrap();
        }),
        ("replaced by garbage", |reference, _, _| std::fs::write(reference, b"not a reference").unwrap()),
        ("empty", |reference, _, _| std::fs::write(reference, b"").unwrap()),
        ("checksum missing", |_, checksum, _| std::fs::remove_file(checksum).unwrap()),
    ];
    for (what, corrupt) in corruptions {
        corrupt(&reference, &checksum, &good);
        let rebuilt = run(cache);
        assert!(rebuilt.rebuilt, "{what}: the entry is rebuilt, not trusted: {}", rebuilt.stderr);
        assert!(rebuilt.stderr.contains("rebuilding"), "{what}: the rebuild is announced: {}", rebuilt.stderr);
        assert_eq!(std::fs::read(&reference).unwrap(), good, "{what}: the rebuilt entry is whole again");
        assert!(checksum.is_file());
    }

    let last = run(cache);
    assert!(!last.rebuilt, "the rebuilt entry is used again: {}", last.stderr);
}

#[test]
fn a_run_killed_while_making_the_reference_leaves_no_usable_partial_entry() {
    use std::os::unix::process::CommandExt;
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path();
    // Its own process group, so that the kill reaches the Python child too.
    let mut child =
        compare(cache).process_group(0).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let references = cache.join("references");
    let started = Instant::now();
    // Wait until the script runs (its temporary copy appears), then let it work a moment.
    while !references.is_dir()
        || !std::fs::read_dir(&references).unwrap().any(|entry| entry.unwrap().file_name().to_string_lossy().ends_with(".py"))
    {
        assert!(started.elapsed() < Duration::from_secs(60), "the script never started");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let status = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status().unwrap();
    assert!(status.success());
    child.wait().unwrap();

    // Whatever is left: every *.safetensors there is whole, or lacks a checksum and is rebuilt.
    for entry in std::fs::read_dir(&references).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "safetensors") {
            let mut checksum = path.clone().into_os_string();
            checksum.push(".sha256");
            if Path::new(&checksum).exists() {
                ReferenceFile::open(&path).expect("an entry with a checksum is whole");
            }
        }
    }
    let after = run(cache);
    let (reference, _) = entry(cache);
    ReferenceFile::open(&reference).expect("the entry is whole after the next run");
    eprintln!("after the kill the next run rebuilt the entry: {}", after.rebuilt);
}

/// Runs compare on `prompts` with the cache in `cache` and a size bound; returns whether the
/// bundled script ran and the reference file used.
fn compare_prompts(cache: &Path, prompts: &[&str], max: &str) -> (bool, String) {
    let mut command = std::process::Command::cargo_bin("gpt2-parity").unwrap();
    let output = command
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("GPT2_PARITY_PYTHON")
        .env("GPT2_PARITY_CACHE", cache)
        .env("GPT2_PARITY_CACHE_MAX", max)
        .args(["compare", "--format", "json", "--model"])
        .arg(fixture_dir())
        .arg("--")
        .args(prompts)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    let report = json_stdout(&output);
    let checked: Vec<&str> = report["prompts"].as_array().unwrap().iter().map(|prompt| prompt["prompt"].as_str().unwrap()).collect();
    assert_eq!(checked, prompts, "exactly the requested prompts, in their order");
    (stderr.contains("making the reference"), report["reference"]["path"].as_str().unwrap().to_owned())
}

fn entries(cache: &Path) -> usize {
    std::fs::read_dir(cache.join("references"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|ext| ext == "safetensors"))
        .count()
}

#[test]
fn an_entry_holding_a_superset_of_the_prompts_serves_and_the_cache_is_size_bounded() {
    let cache = tempfile::tempdir().unwrap();
    let (made, both) = compare_prompts(cache.path(), &["Hello World", "Hello"], "1G");
    assert!(made);
    for subset in [&["Hello"][..], &["Hello", "Hello World"], &["Hello World"]] {
        let (made, used) = compare_prompts(cache.path(), subset, "1G");
        assert!(!made && used == both, "{subset:?} is served by the entry for both prompts");
    }
    // A prompt the entry lacks makes a new entry; a bound below both entries' size prunes the
    // older one, never the one just made.
    let (made, other) = compare_prompts(cache.path(), &["Goodbye"], "1K");
    assert!(made && other != both);
    assert_eq!(entries(cache.path()), 1);
    assert!(Path::new(&other).is_file() && !Path::new(&both).exists());

    let mut command = std::process::Command::cargo_bin("gpt2-parity").unwrap();
    let output = command
        .env("GPT2_PARITY_CACHE", cache.path())
        .env("GPT2_PARITY_CACHE_MAX", "lots")
        .args(["compare", "Hello", "--model"])
        .arg(fixture_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GPT2_PARITY_CACHE_MAX"));
}
