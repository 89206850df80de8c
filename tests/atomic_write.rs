//! Files the tool writes appear whole or not at all, also when the process is killed mid-write.
//! The test binary re-runs itself as a child that writes a large payload over an existing file
//! with `output::write_atomically` (the function every report goes through), and SIGKILLs it at
//! different points of the write. Afterwards the target holds the old content or the whole new
//! content, never a part. A killed write may leave its `.gpt2-parity-*` temporary file beside the
//! target (nothing can remove it once the process is gone); that is documented, and it is never
//! the target.
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use gpt2_parity::sys::output::write_atomically;

const CHILD_TARGET: &str = "GPT2_PARITY_TEST_ATOMIC_TARGET";
const PAYLOAD_BYTES: usize = 200 << 20;

fn payload_byte(index: usize) -> u8 {
    (index % 251) as u8
}

/// In the child (CHILD_TARGET set): write the payload over the target and exit. In a normal test
/// run: nothing.
#[test]
fn child_process_writes_a_large_payload() {
    let Some(target) = std::env::var_os(CHILD_TARGET) else { return };
    let payload: Vec<u8> = (0..PAYLOAD_BYTES).map(payload_byte).collect();
    write_atomically(Path::new(&target), &payload).unwrap();
}

fn spawn_writer(target: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_process_writes_a_large_payload", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_TARGET, target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with(".gpt2-parity-"))
        .collect()
}

/// Whether `bytes` is the child's whole payload.
fn is_whole_payload(bytes: &[u8]) -> bool {
    bytes.len() == PAYLOAD_BYTES && bytes.iter().enumerate().all(|(index, &byte)| byte == payload_byte(index))
}

/// What the target looked like after one killed write.
#[derive(Debug, PartialEq)]
enum After {
    Old,
    Absent,
    New,
}

/// Starts a writer, kills it once its temporary file holds `kill_at` bytes (or it has exited),
/// and returns whether the kill landed mid-write and what the target holds.
fn kill_during_write(dir: &Path, target: &Path, old: Option<&[u8]>, kill_at: u64) -> (bool, After) {
    for leftover in temp_files(dir) {
        std::fs::remove_file(leftover).unwrap();
    }
    match old {
        Some(old) => std::fs::write(target, old).unwrap(),
        None => {
            let _ = std::fs::remove_file(target);
        }
    }
    let mut child = spawn_writer(target);
    let started = Instant::now();
    let mut mid_write = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let written = temp_files(dir).iter().filter_map(|path| std::fs::metadata(path).ok()).map(|meta| meta.len()).max();
        if written.is_some_and(|written| written >= kill_at) {
            mid_write = true;
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the writer took more than a minute");
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().ok(); // SIGKILL: no destructor, no clean-up runs in the child
    let status = child.wait().unwrap();
    // A kill that landed after the rename is not mid-write.
    mid_write &= !status.success();
    let after = match std::fs::read(target) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => After::Absent,
        Err(error) => panic!("cannot read {}: {error}", target.display()),
        Ok(bytes) if Some(bytes.as_slice()) == old => After::Old,
        Ok(bytes) if is_whole_payload(&bytes) => After::New,
        Ok(bytes) => panic!("the target is partial: {} bytes, neither the old file nor the whole new one", bytes.len()),
    };
    (mid_write, after)
}

#[test]
fn a_write_killed_midway_leaves_the_old_file_or_none_never_a_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("report.json");
    let old = b"{\"previous\": \"report\"}\n".repeat(1000);
    let mut killed_mid_write = 0;
    let kill_points = [1 << 10, 1 << 20, 16 << 20, 64 << 20, 150 << 20, PAYLOAD_BYTES as u64];
    for (attempt, &kill_at) in kill_points.iter().enumerate() {
        for old in [Some(old.as_slice()), None] {
            let (mid_write, after) = kill_during_write(dir.path(), &target, old, kill_at);
            eprintln!(
                "attempt {attempt}: kill at {kill_at} bytes, existing target: {}: mid-write {mid_write}, target {after:?}",
                old.is_some()
            );
            if mid_write {
                killed_mid_write += 1;
                let expected = if old.is_some() { After::Old } else { After::Absent };
                assert_eq!(after, expected, "a write killed midway leaves the target as it was");
            } else {
                assert_eq!(after, After::New, "a write that completed leaves the whole new file");
            }
        }
    }
    assert!(killed_mid_write >= 6, "only {killed_mid_write} kills landed mid-write; the test did not test much");
    let leftovers = temp_files(dir.path());
    eprintln!("leftover temporary files after the last kill: {leftovers:?}");
}

#[test]
fn a_completed_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("report.json");
    std::fs::write(&target, b"old").unwrap();
    write_atomically(&target, b"new report").unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new report");
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn a_written_report_is_readable_by_others_like_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("report.json");
    write_atomically(&target, b"{}").unwrap();
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    // The umask decides the exact bits; the temporary file's owner-only 0600 must not leak through.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    let usual = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, usual, "report mode {mode:o}, a plain new file gets {usual:o}");
}

#[test]
fn writing_over_a_directory_fails_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("report.json");
    std::fs::create_dir(&target).unwrap();
    let error = write_atomically(&target, b"{}").unwrap_err();
    assert!(format!("{error:#}").contains("report.json"), "{error:#}");
    assert!(target.is_dir());
    assert!(temp_files(dir.path()).is_empty());
}
