//! What the tool asks of the machine and the process, each in one place: the device, files
//! written whole, the cache directory, Ctrl-C and child processes, where the time went, the tool's
//! own threads and vector code, how the heap is kept, and how the process ends.
pub mod cache;
pub mod device;
pub mod exit;
pub mod interrupt;
pub mod memory;
pub mod output;
pub mod python;
pub mod timings;
pub mod vector;
pub mod workers;
