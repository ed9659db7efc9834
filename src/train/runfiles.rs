//! The files a training run owns in its output folder, and how two runs are kept from sharing them.
//!
//! A new run reserves its name by creating its history file with create-new (so of two runs started together
//! only one gets a name), and every run holds an advisory lock on `runs/<name>.lock` for as long as it trains;
//! the kernel drops the lock when the process ends, however it ends, so a lock is never stale. Before the first
//! epoch the folder is checked to take files and to have room for the checkpoints, and temp files that a
//! crashed writer left behind are removed.

use super::{Result, TrainError};
use crate::fsutil::write_atomic;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Names tried for a new run before giving up (`base`, `base_2`, ...).
const MAX_NAMES: usize = 10_000;

/// An exclusive hold on a run's name; released when dropped or when the process ends.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

fn lock_path(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join("runs").join(format!("{name}.lock"))
}

impl RunLock {
    /// Takes the lock of run `name`, or says which process holds it.
    pub(crate) fn acquire(out_dir: &Path, name: &str) -> Result<RunLock> {
        match Self::try_acquire(out_dir, name)? {
            Ok(lock) => Ok(lock),
            Err(holder) => Err(TrainError::Locked {
                name: name.to_string(),
                dir: out_dir.to_path_buf(),
                holder: Some(holder).filter(|h| !h.is_empty()),
            }),
        }
    }

    /// Takes the lock of run `name`: `Ok(Err(holder))` when another process holds it (its pid, if it wrote one);
    /// an `Err` is a folder that cannot hold the lock file at all.
    fn try_acquire(out_dir: &Path, name: &str) -> Result<Result<RunLock, String>> {
        let path = lock_path(out_dir, name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(TrainError::io("creating", dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(TrainError::io("opening", &path))?;
        // SAFETY: flock on a descriptor this function owns for as long as `file` lives; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Ok(Err(holder.trim().to_string()));
            }
            return Err(TrainError::io("locking", &path)(err));
        }
        // Record the holder for the message above (best effort: the lock itself is what counts).
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Ok(RunLock { _file: file }))
    }
}

/// Whether a live process trains run `name` now: a history left "running" by a process that was killed holds no
/// lock. Probes with a shared lock that it drops at once, so it neither creates a lock file nor rewrites the
/// holder recorded in one. A run that starts in that microsecond takes the next name, and a `--resume` of this
/// very run is refused as held by another process: both say so, neither loses a file.
pub(crate) fn is_training(out_dir: &Path, name: &str) -> bool {
    let Ok(file) = File::open(lock_path(out_dir, name)) else { return false };
    // SAFETY: flock on a descriptor this function owns; the lock, if taken, goes with `file` at the return.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// Whether `name` can be used as a file stem: no folders, nothing hidden, no odd characters.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Names not used by any run in `out_dir`: `base`, then `base_2`, `base_3`, ... (a new run never overwrites an
/// earlier run's model or history).
pub(crate) fn free_names<'a>(out_dir: &'a Path, base: &'a str) -> impl Iterator<Item = String> + 'a {
    let taken = move |stem: &str| {
        out_dir.join(format!("{stem}.safetensors")).exists() || out_dir.join(format!("{stem}.history.json")).exists()
    };
    std::iter::once(base.to_string())
        .chain((2..MAX_NAMES).map(move |i| format!("{base}_{i}")))
        .filter(move |s| !taken(s))
}

/// Reserves a new run's name: takes its lock, then creates its history file with the bytes `history(name)`
/// gives, never replacing an existing file. Returns the lock, which the run holds until it ends.
pub(crate) fn reserve_name(
    out_dir: &Path,
    base: &str,
    mut history: impl FnMut(&str) -> Result<Vec<u8>>,
) -> Result<RunLock> {
    for name in free_names(out_dir, base).take(MAX_NAMES) {
        // A lock another run holds, or a lock file that cannot be opened (another user's, left by `sudo train`),
        // means "try the next name"; a folder that takes no lock file at all is an error.
        let lock = match RunLock::try_acquire(out_dir, &name) {
            Ok(Ok(lock)) => lock,
            Ok(Err(_holder)) => continue,
            Err(_) if lock_path(out_dir, &name).exists() => continue,
            Err(e) => return Err(e),
        };
        let bytes = history(&name)?;
        let path = out_dir.join(format!("{name}.history.json"));
        if crate::fsutil::write_new(&path, &bytes).map_err(TrainError::io("creating", &path))? {
            return Ok(lock);
        }
        // Another run took this name between the check and the create: try the next one.
    }
    Err(TrainError::NoFreeName { base: base.to_string(), dir: out_dir.to_path_buf() })
}

/// Checks before the first epoch that `out_dir` takes files and has room for a run's files (the checkpoint and
/// the resume state, each written beside its previous version), and removes temp files of writers that died.
pub(crate) fn prepare_out_dir(out_dir: &Path, checkpoint_bytes: u64) -> Result<()> {
    let runs = out_dir.join("runs");
    let folder = |problem| move |error| TrainError::OutputFolder { dir: out_dir.to_path_buf(), problem, error };
    std::fs::create_dir_all(&runs).map_err(folder("cannot be created"))?;
    for dir in [out_dir, runs.as_path()] {
        clean_stale_temp_files(dir);
    }
    let probe = out_dir.join(format!(".write-test-{}", std::process::id()));
    write_atomic(&probe, b"ok").map_err(folder("cannot take files"))?;
    let _ = std::fs::remove_file(&probe);
    // Checkpoint + its temp copy, resume state (weights and momentum) + its temp copy, with some slack.
    let need = checkpoint_bytes.saturating_mul(6).saturating_add(1 << 20);
    if let Some(free) = free_bytes(out_dir) {
        if free < need {
            return Err(TrainError::NoRoom { dir: out_dir.to_path_buf(), free, need });
        }
    }
    Ok(())
}

/// Bytes available to this user on the filesystem that holds `dir` (None where it cannot be told).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory of the right size; statvfs fills it
    // completely when it returns 0, and it is read only then.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Removes `.<file>.<pid>-<n>.tmp` files (see [`write_atomic`]) whose writing process is gone.
pub(crate) fn clean_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_file_pid(&name) else { continue };
        if !pid_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The writer's process id in a temp file name of [`write_atomic`].
fn temp_file_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, tag) = rest.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path(), "run_a").unwrap();
        let err = RunLock::acquire(dir.path(), "run_a").unwrap_err();
        assert!(matches!(&err, TrainError::Locked { name, holder: Some(_), .. } if name == "run_a"), "{err}");
        let err = err.to_string();
        assert!(err.contains("being trained by process"), "{err}");
        drop(lock);
        RunLock::acquire(dir.path(), "run_a").unwrap();
    }

    #[test]
    fn a_run_is_training_only_while_its_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_training(dir.path(), "run_a"));
        assert!(!lock_path(dir.path(), "run_a").exists(), "the probe made a lock file");
        let lock = RunLock::acquire(dir.path(), "run_a").unwrap();
        assert!(is_training(dir.path(), "run_a"));
        // The probe leaves the lock to its holder.
        assert!(RunLock::acquire(dir.path(), "run_a").is_err());
        drop(lock);
        assert!(!is_training(dir.path(), "run_a"), "a lock file whose holder is gone reads as training");
    }

    #[test]
    fn two_reservations_get_two_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        let _a = reserve_name(dir.path(), "m", |n| {
            names.push(n.to_string());
            Ok(b"{}".to_vec())
        })
        .unwrap();
        let _b = reserve_name(dir.path(), "m", |n| {
            names.push(n.to_string());
            Ok(b"{}".to_vec())
        })
        .unwrap();
        assert_eq!(names, vec!["m", "m_2"]);
        assert!(dir.path().join("m.history.json").is_file() && dir.path().join("m_2.history.json").is_file());
    }

    #[test]
    fn a_folder_that_takes_no_lock_file_is_named_not_reported_as_out_of_names() {
        let dir = tempfile::tempdir().unwrap();
        // `runs` is a file, so no lock file can be made under it.
        std::fs::write(dir.path().join("runs"), b"").unwrap();
        let err = reserve_name(dir.path(), "m", |_| Ok(b"{}".to_vec())).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("runs") && !msg.contains("no free run name"), "{msg}");
        assert!(!dir.path().join("m.history.json").exists());
    }

    #[test]
    fn a_reserved_history_is_complete_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let _lock = reserve_name(dir.path(), "m", |name| Ok(format!("{{\"name\":\"{name}\"}}").into_bytes())).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("m.history.json")).unwrap(), r#"{"name":"m"}"#);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn run_names_from_files_must_be_plain() {
        assert!(is_plain_name("mobilenetv3_small_0.25_2"));
        for bad in ["", "../../x", "a/b", ".hidden", "x\0y", "a\\b"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn stale_temp_files_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 never names a writer; our own pid is alive.
        let dead = dir.path().join(".model.safetensors.0-3.tmp");
        let alive = dir.path().join(format!(".model.safetensors.{}-0.tmp", std::process::id()));
        let other = dir.path().join("notes.tmp");
        for p in [&dead, &alive, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        clean_stale_temp_files(dir.path());
        assert!(!dead.exists() && alive.exists() && other.exists());
    }

    #[test]
    fn an_output_folder_that_cannot_exist_is_refused_before_training() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a_file");
        std::fs::write(&file, b"x").unwrap();
        let err = format!("{:#}", prepare_out_dir(&file.join("models"), 1000).unwrap_err());
        assert!(err.contains("cannot be created"), "{err}");
        // A checkpoint larger than any disk: refused for room, with the sizes named.
        let err = format!("{:#}", prepare_out_dir(dir.path(), u64::MAX / 8).unwrap_err());
        assert!(err.contains("MB free") && err.contains("needs about"), "{err}");
    }
}
