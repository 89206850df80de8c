//! The heap policy: freed blocks stay with the allocator for reuse, and go back to the kernel only
//! at the one moment it pays (after processing). Together with the spill (run::spill) and the
//! checkpoint's page release (model::load::MappedFiles), this is what keeps the resident set
//! at one weight set.
use std::ops::Range;

use clap::ValueEnum;
use memmap2::Mmap;

/// The whole process's allocator, libtorch's tensors included (jemalloc replaces malloc itself):
/// freed blocks stay with it for reuse rather than going back to the kernel, and blocks of a size
/// are placed together, so that the heap stays the size of what a prompt needs. The rounding
/// envelope's float64 passes allocate and free a block's weights and a prompt's logits prompt
/// after prompt (30 prompts of 64 tokens, GPT-2 small's shape, on 2 cores): handed back to the
/// kernel, each came back as fresh pages the kernel clears (70 s, 42 s of it system time, against
/// 40 s); kept in glibc's heap, later smaller blocks split the freed ones and the heap grew by a
/// prompt's float64 logits (74 MiB) every prompt or two (1,900 MiB; 100 prompts 6,778 MiB). With
/// jemalloc: 1,037 MiB for 30 prompts and for 100.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read before main: every block served from the shared arenas
/// (`oversize_threshold:0`; above 8 MiB jemalloc would otherwise give large blocks an arena that
/// hands them back at once), and freed pages kept until [`return_free_heap`] (no decay).
/// `MALLOC_CONF` in the environment still overrides them.
#[cfg(target_os = "linux")]
#[export_name = "malloc_conf"]
static MALLOC_CONF: Option<&u8> = Some(&b"oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1\0"[0]);

/// Hands the heap's free pages back to the kernel. Processing frees the unprocessed weights'
/// working memory; once it is done, the processed pass's own allocations reuse what they need,
/// and the rest would stay resident beside them.
pub fn return_free_heap() {
    #[cfg(target_os = "linux")]
    {
        /// jemalloc's index for every arena at once (MALLCTL_ARENAS_ALL).
        const PURGE_EVERY_ARENA: &[u8] = b"arena.4096.purge\0";
        // SAFETY: the name is a NUL-terminated mallctl name that takes no value and returns
        // none; purging only returns free pages to the kernel, under jemalloc's own locks.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_EVERY_ARENA.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
}

/// `len` zeros, written into a block asked of the allocator as it is. Asked for a zeroed block,
/// jemalloc clears a reused one by handing its pages back to the kernel, and every page faults in
/// again when it is next touched; a kernel that adds into the block reads each page before
/// writing it and faults twice per page, the second time a copy of the kernel's zero page that
/// flushes the other cores' address caches (on "Hello World", GPT-2 small's shape, 2 cores: 6% of
/// the process's CPU time in the float64 pass's products). Writing the zeros here reuses the
/// block's pages as they are.
pub fn written_zeros<T: Copy + Default>(len: usize) -> Vec<T> {
    let mut values = Vec::with_capacity(len);
    values.resize(len, T::default());
    values
}

/// Drops the pages holding bytes `range` of `map` from this process's memory. Only the resident
/// set shrinks: the file stays in the page cache, and a page read again is read back from
/// there, the same bytes, since the map is read-only.
pub fn release_map_range(map: &Mmap, range: Range<usize>) {
    let range = range.start.min(map.len())..range.end.min(map.len());
    if range.is_empty() {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    let start = map.as_ptr() as usize + range.start;
    let first_page = start & !(page - 1);
    // SAFETY: the pages lie in `map`, a read-only private file mapping (it starts on a page and
    // covers its last page whole); MADV_DONTNEED on such a mapping only drops resident pages,
    // which later reads fault back in from the file.
    unsafe { libc::madvise(first_page as *mut libc::c_void, start + range.len() - first_page, libc::MADV_DONTNEED) };
}

/// `compare --spill`: whether one weight set is resident at a time, the unprocessed pass's
/// logits waiting in a temporary file while the weights are processed (run::passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpillPolicy {
    /// One weight set for models of 64 MiB of weights or more, else both
    Auto,
    /// One weight set in memory at a time, a temporary file in TMPDIR
    Always,
    /// The unprocessed and processed weights held together, nothing written
    Never,
}

/// Under `auto`, a model smaller than this is held twice rather than spilling: a second copy
/// this small is less than libtorch's own start-up footprint (113 MiB), while writing and
/// reading back every prompt's logits cost the fixture model a sixth of a 200-prompt run.
const HOLD_BOTH_BELOW_BYTES: u64 = 64 << 20;

impl SpillPolicy {
    /// Whether a model of `weight_bytes` spills under this policy.
    pub fn spills(self, weight_bytes: u64) -> bool {
        match self {
            SpillPolicy::Auto => weight_bytes >= HOLD_BOTH_BELOW_BYTES,
            SpillPolicy::Always => true,
            SpillPolicy::Never => false,
        }
    }
}
