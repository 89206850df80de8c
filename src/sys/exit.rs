//! How the process ends: at once, without libc's exit handlers, which run libtorch's C++ static
//! destructors and take a tenth of a one-prompt check.
use std::io::Write;

/// Flushes stdout and ends the process with `status`, skipping atexit handlers and C++ static
/// destructors. Between the last report line and exit_group, libtorch's teardown took 60-75 ms of
/// a 0.8 s "Hello World" (strace, 2-core VM); nothing of ours needs it, since every file is
/// written whole, closed and renamed, and every temporary file removed, before this is called.
pub fn without_teardown(status: i32) -> ! {
    // A closed pipe (`| head`) has nothing left to flush into; stderr is unbuffered.
    let _ = std::io::stdout().flush();
    // SAFETY: _exit ends the process at once; the only state it skips is in-process teardown.
    unsafe { libc::_exit(status) }
}
