//! Ctrl-C stops a run promptly, with status 130, and leaves no temporary files.
use std::path::Path;
use std::time::{Duration, Instant};

fn files_in(dir: &Path) -> Vec<String> {
    walk(dir).into_iter().map(|path| path.strip_prefix(dir).unwrap().display().to_string()).collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|entry| if entry.path().is_dir() { walk(&entry.path()) } else { vec![entry.path()] }).collect()
}

/// Interrupts `compare` while the bundled reference script runs (or, on a fast machine,
/// just before), at several moments.
#[test]
fn ctrl_c_while_the_reference_is_made_stops_promptly_and_cleans_up() {
    for delay_ms in [150, 200, 250, 300, 400, 600, 1000, 1500, 3000] {
        let cache = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpt2-parity"))
            .env("HF_HUB_OFFLINE", "1")
            .env("GPT2_PARITY_CACHE", cache.path())
            .env_remove("GPT2_PARITY_PYTHON")
            .args(["compare", "Hello World", "--model"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let signalled = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(signalled.elapsed() < Duration::from_secs(20), "still running 20 s after Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = signalled.elapsed();
        if status.code() == Some(0) {
            continue; // finished before the signal landed: nothing to check at this delay
        }
        // Killed by the signal itself: it came while libtorch was still loading, before main()
        // installed the handler, when nothing has been written yet.
        let before_main = std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
        assert!(before_main || status.code() == Some(130), "after {delay_ms} ms: {status:?}");
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?} to stop");
        let leftovers: Vec<String> =
            files_in(cache.path()).into_iter().filter(|name| name.contains(".gpt2-parity-") || name.ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "after {delay_ms} ms: temporary files left: {leftovers:?}");
        eprintln!("interrupted after {delay_ms} ms: stopped in {elapsed:?}, cache holds {:?}", files_in(cache.path()));
    }
}

/// compare --spill always keeps the unprocessed pass's logits in a temporary file in TMPDIR until
/// the processed pass has read them: gone after a run, and after Ctrl-C in the middle of one. The
/// fixture is small enough that the default (auto) keeps them in memory and writes no file.
#[test]
fn the_logits_spill_is_removed_after_a_run_and_on_ctrl_c() {
    let compare = |tmp: &Path, repeat: &str, spill: &str| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("gpt2-parity"))
            .env("HF_HUB_OFFLINE", "1")
            .env("TMPDIR", tmp)
            .args(["compare", "--repeat", repeat, "--spill", spill, "--model"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-gpt2"))
            .arg("--reference")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/reference/tiny-gpt2.safetensors"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    for spill in ["always", "auto"] {
        assert_eq!(compare(tmp.path(), "1", spill).wait().unwrap().code(), Some(0));
        assert!(files_in(tmp.path()).is_empty(), "--spill {spill}: left in TMPDIR: {:?}", files_in(tmp.path()));
    }

    // Many repeats of each forward keep the run inside its passes long enough to interrupt.
    let mut child = compare(tmp.path(), "400", "always");
    let started = Instant::now();
    while files_in(tmp.path()).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its spill file appeared");
        assert!(started.elapsed() < Duration::from_secs(60), "no spill file within a minute");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(files_in(tmp.path()).is_empty(), "left in TMPDIR after Ctrl-C: {:?}", files_in(tmp.path()));
}
