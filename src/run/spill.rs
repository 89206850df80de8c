//! Keeps the unprocessed pass's logits until the processed pass compares against them. When one
//! weight set is held at a time, the logits of the prompts run before the weights are processed
//! (the first pack, or every prompt: run::passes) wait in a temporary file, removed on exit and
//! on Ctrl-C, so that memory does not grow with the number of prompts. When each pack runs
//! through both models in turn, its logits wait in memory, one pack at a time.
use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use zerocopy::IntoBytes;

use crate::sys::interrupt::TempFile;
use crate::sys::memory::written_zeros;

/// Logits pushed in the first pass and taken back, in the same order, in the second.
pub enum LogitsSpill {
    /// On disk, as this machine holds them in memory (the file never outlives the process).
    File {
        file: TempFile,
        dir: PathBuf,
    },
    Memory(VecDeque<Vec<f32>>),
}

impl LogitsSpill {
    /// An empty spill in a temporary file in TMPDIR.
    pub fn file() -> Result<Self> {
        let dir = std::env::temp_dir();
        let file = TempFile::new_in(&dir, ".logits").with_context(|| {
            format!("cannot make a temporary file in {} for the unprocessed logits; set TMPDIR to a writable directory", dir.display())
        })?;
        Ok(Self::File { file, dir })
    }

    /// An empty spill that holds its logits in memory.
    pub fn memory() -> Self {
        Self::Memory(VecDeque::new())
    }

    /// Appends one prompt's logits.
    pub fn push(&mut self, logits: Vec<f32>) -> Result<()> {
        match self {
            Self::File { file, dir } => file.write_all(logits.as_bytes()).with_context(|| write_failed(dir)),
            Self::Memory(queue) => {
                queue.push_back(logits);
                Ok(())
            }
        }
    }

    /// Goes back to the first prompt's logits, for [`Self::next`].
    pub fn rewind(&mut self) -> Result<()> {
        match self {
            Self::File { file, dir } => {
                file.flush().and_then(|()| file.seek(SeekFrom::Start(0))).map(drop).with_context(|| write_failed(dir))
            }
            Self::Memory(_) => Ok(()),
        }
    }

    /// The next prompt's logits, `len` values.
    pub fn next(&mut self, len: usize) -> Result<Vec<f32>> {
        match self {
            Self::File { file, dir } => {
                let mut logits = written_zeros::<f32>(len);
                file.read_exact(logits.as_mut_bytes())
                    .with_context(|| format!("cannot read back the unprocessed logits from {}", dir.display()))?;
                Ok(logits)
            }
            Self::Memory(queue) => {
                queue.pop_front().context("the unprocessed pass left no logits for this prompt (a bug in gpt2-parity; please report it)")
            }
        }
    }
}

fn write_failed(dir: &std::path::Path) -> String {
    format!(
        "cannot write the unprocessed logits to a temporary file in {}; free space there or set TMPDIR to a directory with room",
        dir.display()
    )
}

/// One forward's logits for every prompt, read back in prompt order as often as needed:
/// explain's baseline and all-steps logits, against which every row is compared. In a file when
/// the run spills (one prompt in memory at a time), else in memory.
pub enum Replayable {
    File { spill: LogitsSpill, lengths: Vec<usize> },
    Memory(Vec<Vec<f32>>),
}

impl Replayable {
    /// An empty store: a temporary file in TMPDIR when `in_file`.
    pub fn new(in_file: bool) -> Result<Self> {
        Ok(if in_file { Self::File { spill: LogitsSpill::file()?, lengths: Vec::new() } } else { Self::Memory(Vec::new()) })
    }

    /// Appends the next prompt's logits.
    pub fn push(&mut self, logits: Vec<f32>) -> Result<()> {
        match self {
            Self::File { spill, lengths } => {
                lengths.push(logits.len());
                spill.push(logits)
            }
            Self::Memory(all) => {
                all.push(logits);
                Ok(())
            }
        }
    }

    /// Prompt `index`'s logits; from a file, prompts must be asked for in order, each pass
    /// starting again at 0.
    pub fn get(&mut self, index: usize) -> Result<Cow<'_, [f32]>> {
        match self {
            Self::File { spill, lengths } => {
                if index == 0 {
                    spill.rewind()?;
                }
                Ok(Cow::Owned(spill.next(lengths[index])?))
            }
            Self::Memory(all) => Ok(Cow::Borrowed(&all[index])),
        }
    }
}
