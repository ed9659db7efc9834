//! Crash-safe file writes.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` so that a reader sees either the old file or the complete new one, never a
/// partial file: write a temp file beside it, fsync it, rename it over the target, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, bytes, |f, b| f.write_all(b))
}

/// [`write_atomic`] with the write into the temp file supplied: the seam through which tests make a write fail
/// half-way (a full disk) without filling one.
pub(crate) fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    write_via_temp(path, bytes, write, |tmp, path| std::fs::rename(tmp, path))
}

/// Creates `path` holding `bytes`, complete or not at all, and never replaces a file: the temp file is
/// hard-linked into place, which fails where `path` exists. `Ok(false)` when it exists already.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    match write_via_temp(path, bytes, |f, b| f.write_all(b), |tmp, path| std::fs::hard_link(tmp, path)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        // A filesystem without hard links: create-new, then the bytes (complete unless the machine dies).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::EXDEV)) => {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => f.write_all(bytes).and_then(|()| f.sync_all()).map(|()| true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` into a temp file beside `path`, syncs it, then `place`s it at `path` (rename or link) and
/// syncs the folder; the temp file never outlives the call.
fn write_via_temp(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
    place: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Unique per process and per call, so two writers of one path never share a temp file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}-{n}.tmp", std::process::id()));
    let result: std::io::Result<()> = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f, bytes)?;
        f.sync_all()?;
        drop(f);
        place(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            // Makes the rename or link itself durable; not every filesystem supports syncing a folder.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    // Gone already after a rename; still there after a link or a failure.
    let _ = std::fs::remove_file(&tmp);
    result.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => std::io::Error::new(
            e.kind(),
            format!("the disk is full ({e}); {} keeps its previous version", path.display()),
        ),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_keeps_the_previous_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        write_atomic(&path, b"the previous best").unwrap();
        let err = write_atomic_with(&path, &[7u8; 4096], |f, b| {
            f.write_all(&b[..1000])?;
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        })
        .unwrap_err();
        assert!(err.to_string().contains("the disk is full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"the previous best");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("model.safetensors")]);
    }
}
