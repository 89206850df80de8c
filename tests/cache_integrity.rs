//! The reference cache is never trusted blindly: `compare` without `--reference` keeps what the
//! bundled script made in GPT2_PARITY_CACHE/references/, with a `.sha256` checksum beside each
//! entry. An entry that is truncated, bit-flipped, replaced, or lacks its checksum is rebuilt; a
//! run killed while making one leaves nothing that a later run would use.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{binary, fixture_dir, json_stdout, prompts_file, wait_until};
use gpt2_parity::reference::ReferenceFile;

fn compare(cache: &Path) -> std::process::Command {
    let mut command = binary();
    command.env("GPT2_PARITY_CACHE", cache).args(["compare", "Hello World", "--format", "json", "--model"]).arg(fixture_dir());
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

/// SIGKILL, which no clean-up survives, of the whole process group while the script writes a
/// reference of many prompts (on its temporary output appearing): its partial output stays
/// behind, no entry is recorded, and the next run rebuilds one rather than trust a part.
#[test]
fn a_run_killed_while_making_the_reference_leaves_no_usable_partial_entry() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let prompts = prompts_file(dir.path(), 100);
    let mut child = binary()
        .env("GPT2_PARITY_CACHE", &cache)
        .args(["compare", "--model"])
        .arg(fixture_dir())
        .arg("--prompts-file")
        .arg(&prompts)
        .process_group(0) // so that the kill reaches the Python child too
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let references = cache.join("references");
    let names = || -> Vec<String> {
        std::fs::read_dir(&references)
            .map_or(Vec::new(), |entries| entries.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect())
    };
    wait_until(&mut child, "the script began writing the reference", || names().iter().any(|name| name.ends_with(".tmp")));
    // SAFETY: kill(2) on the process group of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) }, 0);
    child.wait().unwrap();

    let left = names();
    assert!(left.iter().any(|name| name.ends_with(".tmp")), "the kill landed mid-write, leaving the partial output: {left:?}");
    assert!(!left.iter().any(|name| name.ends_with(".sha256")), "no entry was recorded: {left:?}");
    let after = run(&cache);
    assert!(after.rebuilt, "the next run makes the reference anew: {}", after.stderr);
    let (reference, _) = entry(&cache);
    ReferenceFile::open(&reference).expect("the entry is whole after the next run");
}

/// Runs compare on `prompts` with the cache in `cache` and a size bound; returns whether the
/// bundled script ran and the reference file used.
fn compare_prompts(cache: &Path, prompts: &[&str], max: &str) -> (bool, String) {
    let output = binary()
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

    let output = binary()
        .env("GPT2_PARITY_CACHE", cache.path())
        .env("GPT2_PARITY_CACHE_MAX", "lots")
        .args(["compare", "Hello", "--model"])
        .arg(fixture_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GPT2_PARITY_CACHE_MAX"));
}
