//! Files the tool writes appear whole or not at all, also when the process is killed mid-write.
//! The test binary re-runs itself as a child that writes a payload over an existing file with
//! `output::write_atomically` (the function every report goes through), under a file-size limit
//! (RLIMIT_FSIZE): the kernel kills it with SIGXFSZ the moment its temporary file would grow past
//! the limit, so each kill lands at an exact byte of the write, whatever the machine's speed.
//! Afterwards the target holds the old content or the whole new content, never a part. A killed
//! write leaves its `.gpt2-parity-*` temporary file beside the target (nothing can remove it once
//! the process is gone); that is documented, and it is never the target.
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use gpt2_parity::sys::output::write_atomically;

const CHILD_TARGET: &str = "GPT2_PARITY_TEST_ATOMIC_TARGET";
const PAYLOAD_BYTES: usize = 16 << 20;

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

/// Runs the writer with files limited to `limit` bytes; its exit status.
fn write_with_size_limit(target: &Path, limit: u64) -> std::process::ExitStatus {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["child_process_writes_a_large_payload", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_TARGET, target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit(2) is async-signal-safe, and the closure touches nothing else. SIGXFSZ
    // dumps core by default: no core file either.
    unsafe {
        command.pre_exec(move || {
            let size = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &size) == 0 && libc::setrlimit(libc::RLIMIT_CORE, &no_core) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    command.status().unwrap()
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

/// What the target looked like after one write.
#[derive(Debug, PartialEq)]
enum After {
    Old,
    Absent,
    New,
}

fn target_state(target: &Path, old: Option<&[u8]>) -> After {
    match std::fs::read(target) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => After::Absent,
        Err(error) => panic!("cannot read {}: {error}", target.display()),
        Ok(bytes) if Some(bytes.as_slice()) == old => After::Old,
        Ok(bytes) if is_whole_payload(&bytes) => After::New,
        Ok(bytes) => panic!("the target is partial: {} bytes, neither the old file nor the whole new one", bytes.len()),
    }
}

#[test]
fn a_write_killed_midway_leaves_the_old_file_or_none_never_a_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("report.json");
    let old = b"{\"previous\": \"report\"}\n".repeat(1000);
    let payload = PAYLOAD_BYTES as u64;
    for kill_at in [0, 1, 1 << 10, 1 << 20, 8 << 20, payload - 1] {
        for old in [Some(old.as_slice()), None] {
            for leftover in temp_files(dir.path()) {
                std::fs::remove_file(leftover).unwrap();
            }
            match old {
                Some(old) => std::fs::write(&target, old).unwrap(),
                None => drop(std::fs::remove_file(&target)),
            }
            let status = write_with_size_limit(&target, kill_at);
            let what = format!("killed at byte {kill_at}, existing target: {}", old.is_some());
            assert_eq!(status.signal(), Some(libc::SIGXFSZ), "{what}: {status:?}");
            let expected = if old.is_some() { After::Old } else { After::Absent };
            assert_eq!(target_state(&target, old), expected, "{what}: the target is as it was");
            let partial: Vec<u64> = temp_files(dir.path()).iter().map(|path| std::fs::metadata(path).unwrap().len()).collect();
            assert_eq!(partial, [kill_at], "{what}: the one temporary file holds what was written before the kill");
        }
    }
    // The limit that the whole payload fits in lets the write complete.
    for old in [Some(old.as_slice()), None] {
        if let Some(old) = old {
            std::fs::write(&target, old).unwrap();
        }
        let status = write_with_size_limit(&target, payload);
        assert!(status.success(), "{status:?}");
        assert_eq!(target_state(&target, old), After::New, "a write that completed leaves the whole new file");
        std::fs::remove_file(&target).unwrap();
    }
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
