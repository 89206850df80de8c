//! Keeps the unprocessed pass's logits on disk between compare's two passes, so that memory does
//! not grow with the number of prompts. One weight set is held at a time (the processed weights
//! are made from the unprocessed ones in place), so processed-vs-unprocessed needs the first
//! pass's logits back in the second; a temporary file, removed on exit and on Ctrl-C, holds them.
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use zerocopy::IntoBytes;

use crate::interrupt::TempFile;

/// Logits written in the first pass and read back, in the same order, in the second, as this
/// machine holds them in memory (the file never outlives the process).
pub struct LogitsSpill {
    file: TempFile,
    dir: PathBuf,
}

impl LogitsSpill {
    /// An empty spill in the temporary directory (TMPDIR).
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir();
        let file = TempFile::new_in(&dir, ".logits").with_context(|| {
            format!("cannot make a temporary file in {} for the unprocessed logits; set TMPDIR to a writable directory", dir.display())
        })?;
        Ok(Self { file, dir })
    }

    /// Appends one prompt's logits.
    pub fn push(&mut self, logits: &[f32]) -> Result<()> {
        self.file.write_all(logits.as_bytes()).with_context(|| self.write_failed())
    }

    /// Goes back to the first prompt's logits, for [`Self::next`].
    pub fn rewind(&mut self) -> Result<()> {
        self.file.flush().and_then(|()| self.file.seek(SeekFrom::Start(0))).map(drop).with_context(|| self.write_failed())
    }

    /// The next prompt's logits, `len` values.
    pub fn next(&mut self, len: usize) -> Result<Vec<f32>> {
        let mut logits = vec![0.0f32; len];
        self.file
            .read_exact(logits.as_mut_bytes())
            .with_context(|| format!("cannot read back the unprocessed logits from {}", self.dir.display()))?;
        Ok(logits)
    }

    fn write_failed(&self) -> String {
        format!(
            "cannot write the unprocessed logits to a temporary file in {}; free space there or set TMPDIR to a directory with room",
            self.dir.display()
        )
    }
}
