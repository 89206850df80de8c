//! Ctrl-C ends a run promptly, with status 130, and leaves no temporary files: each temporary
//! file lives in a [`TempFile`] that is registered here until it is dropped or renamed into
//! place, and a running reference script is interrupted too so that it removes its own.
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static TEMPORARY_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static CHILD: Mutex<Option<u32>> = Mutex::new(None);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Exit status after Ctrl-C, as shells report a SIGINT death.
const INTERRUPTED_STATUS: i32 = 130;

pub fn install_handler() {
    // Without the handler Ctrl-C keeps its default, an immediate exit: still prompt, so a
    // failure to install is not worth stopping for.
    let _ = ctrlc::set_handler(on_interrupt);
}

fn on_interrupt() {
    let again = INTERRUPTED.swap(true, Ordering::SeqCst);
    let child = *lock(&CHILD);
    match child {
        // The waiting thread exits once the script has cleaned up after itself.
        Some(pid) if !again => {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        }
        _ => exit_now(),
    }
}

/// Removes the registered temporary files and exits with status 130.
fn exit_now() -> ! {
    // The list stays locked until the process is gone, so that no thread creates a temporary
    // file meanwhile (creation happens under the same lock).
    let mut registered = lock(&TEMPORARY_FILES);
    for path in registered.drain(..) {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("interrupted");
    // libtorch's static destructors take long enough for other threads to go on working.
    super::exit::without_teardown(INTERRUPTED_STATUS)
}

/// Runs `command` to completion, letting Ctrl-C interrupt it; exits if it was interrupted.
pub fn run_child(command: &mut std::process::Command) -> io::Result<std::process::Output> {
    // Spawned under the lock, so that Ctrl-C either comes before the child exists (and the
    // process exits without starting it) or finds it recorded.
    let child = {
        let mut recorded = lock(&CHILD);
        if INTERRUPTED.load(Ordering::SeqCst) {
            drop(recorded);
            exit_now();
        }
        let child = command.spawn()?;
        *recorded = Some(child.id());
        child
    };
    let output = child.wait_with_output();
    *lock(&CHILD) = None;
    if INTERRUPTED.load(Ordering::SeqCst) {
        exit_now();
    }
    output
}

/// A `tempfile::NamedTempFile` named `.gpt2-parity-*` that Ctrl-C removes.
pub struct TempFile {
    file: tempfile::NamedTempFile,
    _registration: Registration,
}

/// Keeps a path in the list Ctrl-C cleans up, for as long as it lives.
struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&TEMPORARY_FILES).retain(|known| *known != self.0);
    }
}

impl TempFile {
    pub fn new_in(dir: &Path, suffix: &str) -> io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".gpt2-parity-").suffix(suffix);
        // tempfile creates owner-only files; what the tool writes gets the usual 0666 minus the umask.
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        // Created under the lock: Ctrl-C's clean-up sees every temporary file that exists.
        let mut registered = lock(&TEMPORARY_FILES);
        let file = builder.tempfile_in(dir)?;
        registered.push(file.path().to_path_buf());
        drop(registered);
        let registration = Registration(file.path().to_path_buf());
        Ok(Self { file, _registration: registration })
    }

    /// Renames the file to `path`, atomically replacing what was there. On failure the
    /// temporary file is removed at once.
    pub fn persist(self, path: &Path) -> io::Result<()> {
        self.file.persist(path).map(drop).map_err(|error| error.error)
    }
}

impl Deref for TempFile {
    type Target = tempfile::NamedTempFile;
    fn deref(&self) -> &Self::Target {
        &self.file
    }
}

impl DerefMut for TempFile {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.file
    }
}

/// A poisoned lock only means another thread panicked; the list itself is still sound.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
