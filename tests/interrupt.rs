//! Ctrl-C stops a run with status 130 and leaves no temporary files. Each interrupt waits for
//! the run to reach its phase (a line it prints, a file it makes), never for a time to pass.
mod common;

use std::path::Path;
use std::process::Stdio;

use common::{binary, compare_fixture_process, fixture_dir, interrupt, prompts_file, wait_for_stderr_line, wait_until};

fn files_in(dir: &Path) -> Vec<String> {
    walk(dir).into_iter().map(|path| path.strip_prefix(dir).unwrap().display().to_string()).collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|entry| if entry.path().is_dir() { walk(&entry.path()) } else { vec![entry.path()] }).collect()
}

fn temporary_files(dir: &Path) -> Vec<String> {
    files_in(dir).into_iter().filter(|name| name.contains(".gpt2-parity-") || name.ends_with(".tmp")).collect()
}

/// `compare` without `--reference`, so that the bundled script makes one in `cache`, of enough
/// prompts that it is still writing long after its output file appears.
fn compare_making_the_reference(cache: &Path) -> std::process::Child {
    binary()
        .env("GPT2_PARITY_CACHE", cache)
        .args(["compare", "--model"])
        .arg(fixture_dir())
        .arg("--prompts-file")
        .arg(prompts_file(cache, 100))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Interrupted as the bundled script starts (on the line that announces it) and while it writes
/// its output (on its temporary file appearing): status 130 each time, the script's temporary
/// output, its copy and the prompts file are gone, and no cache entry is left to trust.
#[test]
fn ctrl_c_while_the_reference_is_made_stops_and_cleans_up() {
    let cache = tempfile::tempdir().unwrap();
    let mut child = compare_making_the_reference(cache.path());
    wait_for_stderr_line(&mut child, "making the reference");
    let status = interrupt(&mut child);
    assert_eq!(status.code(), Some(130), "as the script starts: {status:?}");
    assert_eq!(temporary_files(cache.path()), Vec::<String>::new(), "as the script starts");
    assert!(!files_in(cache.path()).iter().any(|name| name.ends_with(".sha256")), "no entry was recorded: {:?}", files_in(cache.path()));

    let cache = tempfile::tempdir().unwrap();
    let mut child = compare_making_the_reference(cache.path());
    wait_for_stderr_line(&mut child, "making the reference");
    wait_until(&mut child, "the script's temporary output appeared", || files_in(cache.path()).iter().any(|name| name.ends_with(".tmp")));
    let status = interrupt(&mut child);
    assert_eq!(status.code(), Some(130), "while the script writes: {status:?}");
    assert_eq!(temporary_files(cache.path()), Vec::<String>::new(), "while the script writes");
}

/// compare --spill always keeps the unprocessed pass's logits in a temporary file in TMPDIR until
/// the processed pass has read them: gone after a run, and after Ctrl-C in the middle of one. The
/// fixture is small enough that the default (auto) keeps them in memory and writes no file.
#[test]
fn the_logits_spill_is_removed_after_a_run_and_on_ctrl_c() {
    let compare = |tmp: &Path, repeat: &str, spill: &str| {
        compare_fixture_process()
            .env("TMPDIR", tmp)
            .args(["--repeat", repeat, "--spill", spill])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    for spill in ["always", "auto"] {
        assert_eq!(compare(tmp.path(), "1", spill).wait().unwrap().code(), Some(0));
        assert!(files_in(tmp.path()).is_empty(), "--spill {spill}: left in TMPDIR: {:?}", files_in(tmp.path()));
    }

    // The spill file exists from the end of the first pass to the end of the second; many
    // repeats of each forward keep the second pass going long after the file is seen.
    let mut child = compare(tmp.path(), "400", "always");
    wait_until(&mut child, "its spill file appeared", || !files_in(tmp.path()).is_empty());
    assert_eq!(interrupt(&mut child).code(), Some(130));
    assert!(files_in(tmp.path()).is_empty(), "left in TMPDIR after Ctrl-C: {:?}", files_in(tmp.path()));
}
