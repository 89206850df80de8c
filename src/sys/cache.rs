//! The tool's own cache (GPT2_PARITY_CACHE, else XDG_CACHE_HOME/gpt2-parity, else
//! ~/.cache/gpt2-parity): references made by the bundled script, and weight digests, which
//! cost more than the rest of a check on GPT-2 sized files (1.7 s for 548 MB here).
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use sha2::{Digest, Sha256};

use crate::sys::memory::release_map_range;
use crate::sys::output::write_atomically;

/// An environment variable holding a non-empty path.
pub fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from)
}

pub fn cache_dir() -> PathBuf {
    env_path("GPT2_PARITY_CACHE").unwrap_or_else(|| {
        env_path("XDG_CACHE_HOME")
            .or_else(|| env_path("HOME").map(|home| home.join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("gpt2-parity")
    })
}

/// The content of a file whose digest is taken.
pub enum FileBytes<'a> {
    /// A read-only map of the file, its pages let go from memory as they are hashed: hashing a
    /// reference through its map held the whole file in the resident set (4.4 GB for 2,000
    /// fixture prompts, 12x the rest of the run), though the tool never reads it so otherwise.
    Mapped(&'a Mmap),
    InMemory(&'a [u8]),
}

/// Bytes hashed between two releases of a map's pages.
const HASHED_AT_ONCE: usize = 16 << 20;

impl FileBytes<'_> {
    fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        match self {
            FileBytes::Mapped(map) => {
                for start in (0..map.len()).step_by(HASHED_AT_ONCE) {
                    let range = start..(start + HASHED_AT_ONCE).min(map.len());
                    hasher.update(&map[range.clone()]);
                    release_map_range(map, range);
                }
            }
            FileBytes::InMemory(bytes) => hasher.update(bytes),
        }
        format!("sha256:{:x}", hasher.finalize())
    }
}

/// `sha256:<hex>` of `bytes`, the content of the file at `path`. Remembered per file identity
/// (device, inode, size, modification and change times): any write to the file changes its
/// change time, which no user can set, so a remembered digest is never stale. A cache that
/// cannot be read or written only costs the hashing.
pub fn file_digest(path: &Path, bytes: FileBytes) -> String {
    remembered_digest(&cache_dir().join("digests"), path, bytes)
}

/// Remembers `digest` (`sha256:<hex>`, just computed from the whole file by other means) as the
/// file at `path`'s, so that [`file_digest`] does not hash it again.
pub fn remember_file_digest(path: &Path, digest: &str) {
    remember(&cache_dir().join("digests"), path, digest);
}

/// Where the digest of the file at `path`, as it is now, is remembered.
fn digest_entry(digests: &Path, path: &Path) -> Option<PathBuf> {
    std::fs::metadata(path).ok().map(|meta| {
        let identity = format!(
            "{}:{}:{}:{}.{}:{}.{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        digests.join(format!("{:x}", Sha256::digest(identity.as_bytes())))
    })
}

fn remembered_digest(digests: &Path, path: &Path, bytes: FileBytes) -> String {
    let remembered = digest_entry(digests, path).and_then(|entry| std::fs::read_to_string(entry).ok());
    if let Some(digest) = remembered.filter(|text| is_digest(text)) {
        return digest;
    }
    let digest = bytes.sha256();
    remember(digests, path, &digest);
    digest
}

fn remember(digests: &Path, path: &Path, digest: &str) {
    if let Some(entry) = digest_entry(digests, path).filter(|_| is_digest(digest)) {
        let _ = std::fs::create_dir_all(digests).map(|()| write_atomically(&entry, digest.as_bytes()));
    }
}

/// `sha256:` and 64 hex digits.
fn is_digest(text: &str) -> bool {
    text.len() == 71 && text.starts_with("sha256:") && text[7..].bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_digest_follows_every_rewrite_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (digests, file) = (dir.path().join("digests"), dir.path().join("model.safetensors"));
        let digest_of = |content: &[u8]| {
            std::fs::write(&file, content).unwrap();
            remembered_digest(&digests, &file, FileBytes::InMemory(&std::fs::read(&file).unwrap()))
        };
        let first = digest_of(b"weights one");
        assert_eq!(first, format!("sha256:{:x}", Sha256::digest(b"weights one")));
        assert_eq!(std::fs::read_dir(&digests).unwrap().count(), 1, "remembered");
        assert_eq!(remembered_digest(&digests, &file, FileBytes::InMemory(b"ignored when remembered")), first);
        // Same size, rewritten in place: the change time moves, so the digest is computed again.
        let second = digest_of(b"weights two");
        assert_eq!(second, format!("sha256:{:x}", Sha256::digest(b"weights two")));
    }

    /// A mapped file is hashed a slice at a time, each slice's pages let go as it goes: the same
    /// digest as its bytes in memory, and the map reads the same bytes afterwards.
    #[test]
    fn a_mapped_file_hashes_as_its_bytes_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reference.safetensors");
        let content: Vec<u8> = (0..2 * HASHED_AT_ONCE + 12_345).map(|index| (index * 7 % 251) as u8).collect();
        std::fs::write(&file, &content).unwrap();
        // SAFETY: a read-only map of a file this test owns and does not change.
        let map = unsafe { Mmap::map(&std::fs::File::open(&file).unwrap()) }.unwrap();
        assert_eq!(FileBytes::Mapped(&map).sha256(), FileBytes::InMemory(&content).sha256());
        assert!(map[..] == content[..], "the map reads the file's bytes after its pages were let go");
    }

    #[test]
    fn a_digest_computed_elsewhere_is_remembered_for_the_file_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (digests, file) = (dir.path().join("digests"), dir.path().join("reference.safetensors"));
        std::fs::write(&file, b"logits").unwrap();
        let digest = format!("sha256:{:x}", Sha256::digest(b"logits"));
        remember(&digests, &file, &digest);
        assert_eq!(remembered_digest(&digests, &file, FileBytes::InMemory(b"not hashed: remembered")), digest);
        // Anything but a digest is not remembered.
        std::fs::write(&file, b"other logits").unwrap();
        remember(&digests, &file, "sha256:not hex");
        assert_eq!(
            remembered_digest(&digests, &file, FileBytes::InMemory(b"other logits")),
            format!("sha256:{:x}", Sha256::digest(b"other logits"))
        );
    }
}
