//! The heap policy: large blocks stay in the heap when freed, and go back to the kernel only at
//! the one moment it pays (after processing). Together with the spill (run::spill) and the
//! checkpoint's page release (model::load::MappedFiles), this is what keeps the resident set
//! at one weight set.
use std::ops::Range;

use clap::ValueEnum;
use memmap2::Mmap;

/// Processing allocates and frees model-sized float64 buffers part after part. glibc hands
/// every large block back to the kernel on free, and the next one is fresh memory that the
/// kernel clears page by page: 0.9 s of system time on a GPT-2-small check. Served from the
/// heap and kept there when freed, a block is reused instead; the peak resident set stays the
/// same, since it is counted at the largest moment either way.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands the heap's free memory back to the kernel. Processing's float64 working memory stays in
/// the heap for reuse while it runs ([`reuse_freed_memory`]); once it is done, the processed
/// pass's own allocations would land beside it rather than in it, and the resident set would
/// grow by both.
pub fn return_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns the allocator's free pages, under the allocator's own lock.
    unsafe {
        libc::malloc_trim(0);
    }
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
