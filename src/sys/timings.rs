//! Where a run's time and memory go, phase by phase, for `--timings`: the figures that say which
//! stage to make faster. Always recorded (a clock read per phase), printed to stderr only when
//! asked, so that the report on stdout stays the same bytes run after run.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The stages of a run, in the order they happen (and of [`PHASES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From the process's start to `main`: the dynamic loader mapping libtorch and running its
    /// static initialisers.
    LibtorchStart,
    Tokenizer,
    /// Opening and auditing the checkpoint and building the weight tensors.
    ModelLoad,
    /// The weights file's sha256 (remembered per file, so usually a cache read).
    Digest,
    /// Reading (or making, with the bundled script) the reference.
    Reference,
    Processing,
    Forward,
    Statistics,
    Render,
}

const PHASES: [Phase; 9] = [
    Phase::LibtorchStart,
    Phase::Tokenizer,
    Phase::ModelLoad,
    Phase::Digest,
    Phase::Reference,
    Phase::Processing,
    Phase::Forward,
    Phase::Statistics,
    Phase::Render,
];

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::LibtorchStart => "libtorch start",
            Phase::Tokenizer => "tokenizer",
            Phase::ModelLoad => "model load",
            Phase::Digest => "digest",
            Phase::Reference => "reference",
            Phase::Processing => "processing",
            Phase::Forward => "forward",
            Phase::Statistics => "statistics",
            Phase::Render => "render",
        }
    }
}

/// Wall time and process CPU time spent in one phase. CPU time is what stays meaningful on a
/// busy machine, where wall time also counts the waits for a core.
#[derive(Debug, Clone, Copy, Default)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

static TOTALS: Mutex<[Spent; PHASES.len()]> = Mutex::new([Spent { wall: Duration::ZERO, cpu: Duration::ZERO }; PHASES.len()]);

fn record(phase: Phase, spent: Spent) {
    if let Ok(mut totals) = TOTALS.lock() {
        let total = &mut totals[phase as usize];
        total.wall += spent.wall;
        total.cpu += spent.cpu;
    }
}

/// Runs `work`, counting its time to `phase`. Phases do not nest: time `work`'s parts apart.
pub fn timed<T>(phase: Phase, work: impl FnOnce() -> T) -> T {
    let (start, start_cpu) = (Instant::now(), process_cpu_time());
    let result = work();
    record(phase, Spent { wall: start.elapsed(), cpu: process_cpu_time().saturating_sub(start_cpu) });
    result
}

/// CPU time of all the process's threads so far.
fn process_cpu_time() -> Duration {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct it is given and has no other effect.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// Records the time from the process's start to now as [`Phase::LibtorchStart`]; call first
/// thing in `main`. The kernel counts a process's start in clock ticks (10 ms here).
pub fn record_process_start() {
    if let Some(wall) = since_process_start() {
        record(Phase::LibtorchStart, Spent { wall, cpu: process_cpu_time() });
    }
}

/// Wall time since the process started, from /proc (Linux only; `None` elsewhere).
fn since_process_start() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; starttime is field 22 of the whole line.
    let after_name = stat.rsplit_once(')')?.1;
    let start_ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let seconds = uptime - start_ticks / ticks_per_second;
    (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The process's user and system CPU time and its peak resident set (bytes), from getrusage.
fn resource_usage() -> (Duration, Duration, u64) {
    // SAFETY: getrusage fills the struct it is given and has no other effect.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let duration = |time: libc::timeval| Duration::new(time.tv_sec as u64, time.tv_usec as u32 * 1000);
    (duration(usage.ru_utime), duration(usage.ru_stime), usage.ru_maxrss as u64 * 1024)
}

/// The table `--timings` prints: each phase's wall and CPU seconds, what no phase covers, the
/// total, CPU time split into user and system (system time is mostly page faults on fresh
/// memory), and the peak resident set.
pub fn render() -> String {
    let totals = TOTALS.lock().map(|totals| *totals).unwrap_or_default();
    let (user, system, peak_rss) = resource_usage();
    let total = Spent { wall: since_process_start().unwrap_or_else(|| totals.iter().map(|spent| spent.wall).sum()), cpu: user + system };
    let covered = Spent { wall: totals.iter().map(|spent| spent.wall).sum(), cpu: totals.iter().map(|spent| spent.cpu).sum() };
    let other = Spent { wall: total.wall.saturating_sub(covered.wall), cpu: total.cpu.saturating_sub(covered.cpu) };
    let line = |label: &str, spent: Spent| format!("  {label:<16}{:>8.3}{:>8.3}\n", spent.wall.as_secs_f64(), spent.cpu.as_secs_f64());
    let mut text = String::from("timings (s)          wall     cpu\n");
    for (phase, spent) in PHASES.iter().zip(totals) {
        text.push_str(&line(phase.label(), spent));
    }
    text.push_str(&line("other", other));
    text.push_str(&line("total", total));
    text.push_str(&format!(
        "  cpu: user {:.3} s, system {:.3} s; peak RSS {} MiB\n",
        user.as_secs_f64(),
        system.as_secs_f64(),
        peak_rss / (1024 * 1024)
    ));
    text
}
