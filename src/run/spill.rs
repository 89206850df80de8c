//! Keeps the unprocessed pass's logits on disk between compare's two passes, so that memory does
//! not grow with the number of prompts. One weight set is held at a time (the processed weights
//! are made from the unprocessed ones in place), so processed-vs-unprocessed needs the first
//! pass's logits back in the second; a temporary file, removed on exit and on Ctrl-C, holds them.
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::interrupt::TempFile;

/// Logits written in the first pass and read back, in the same order, in the second.
pub struct LogitsSpill {
    file: TempFile,
    dir: PathBuf,
    bytes: Vec<u8>,
}

impl LogitsSpill {
    /// An empty spill in the temporary directory (TMPDIR).
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir();
        let file = TempFile::new_in(&dir, ".logits").with_context(|| {
            format!("cannot make a temporary file in {} for the unprocessed logits; set TMPDIR to a writable directory", dir.display())
        })?;
        Ok(Self { file, dir, bytes: Vec::new() })
    }

    /// Appends one prompt's logits.
    pub fn push(&mut self, logits: &[f32]) -> Result<()> {
        self.bytes.clear();
        self.bytes.extend(logits.iter().flat_map(|value| value.to_le_bytes()));
        self.file.write_all(&self.bytes).with_context(|| self.write_failed())
    }

    /// Goes back to the first prompt's logits, for [`Self::next`].
    pub fn rewind(&mut self) -> Result<()> {
        self.file.flush().and_then(|()| self.file.seek(SeekFrom::Start(0))).map(drop).with_context(|| self.write_failed())
    }

    /// The next prompt's logits, `len` values.
    pub fn next(&mut self, len: usize) -> Result<Vec<f32>> {
        self.bytes.resize(4 * len, 0);
        self.file
            .read_exact(&mut self.bytes)
            .with_context(|| format!("cannot read back the unprocessed logits from {}", self.dir.display()))?;
        Ok(self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4-byte chunk"))).collect())
    }

    fn write_failed(&self) -> String {
        format!(
            "cannot write the unprocessed logits to a temporary file in {}; free space there or set TMPDIR to a directory with room",
            self.dir.display()
        )
    }
}
