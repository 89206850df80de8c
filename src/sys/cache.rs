//! The tool's own cache (GPT2_PARITY_CACHE, else XDG_CACHE_HOME/gpt2-parity, else
//! ~/.cache/gpt2-parity): references made by the bundled script, and weight digests, which
//! cost more than the rest of a check on GPT-2 sized files (1.7 s for 548 MB here).
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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

/// `sha256:<hex>` of `bytes`, the content of the file at `path`. Remembered per file identity
/// (device, inode, size, modification and change times): any write to the file changes its
/// change time, which no user can set, so a remembered digest is never stale. A cache that
/// cannot be read or written only costs the hashing.
pub fn file_digest(path: &Path, bytes: &[u8]) -> String {
    remembered_digest(&cache_dir().join("digests"), path, bytes)
}

fn remembered_digest(digests: &Path, path: &Path, bytes: &[u8]) -> String {
    let entry = std::fs::metadata(path).ok().map(|meta| {
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
    });
    let remembered = entry.as_ref().and_then(|entry| std::fs::read_to_string(entry).ok());
    if let Some(digest) = remembered.filter(|text| text.starts_with("sha256:") && text.len() == 71) {
        return digest;
    }
    let digest = format!("sha256:{:x}", Sha256::digest(bytes));
    if let Some(entry) = entry {
        let _ = std::fs::create_dir_all(digests).map(|()| write_atomically(&entry, digest.as_bytes()));
    }
    digest
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
            remembered_digest(&digests, &file, &std::fs::read(&file).unwrap())
        };
        let first = digest_of(b"weights one");
        assert_eq!(first, format!("sha256:{:x}", Sha256::digest(b"weights one")));
        assert_eq!(std::fs::read_dir(&digests).unwrap().count(), 1, "remembered");
        assert_eq!(remembered_digest(&digests, &file, b"ignored when remembered"), first);
        // Same size, rewritten in place: the change time moves, so the digest is computed again.
        let second = digest_of(b"weights two");
        assert_eq!(second, format!("sha256:{:x}", Sha256::digest(b"weights two")));
    }
}
