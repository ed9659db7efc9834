//! Downloading a data archive: streamed to `NAME.part`, checked against its MD5, and renamed to `NAME` only once
//! complete and verified, so that a partial or corrupt file never poses as the real one. A transfer that breaks
//! off or is cancelled keeps its `.part`, and the next attempt asks the server for the rest (an HTTP range).

use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The official CIFAR-100 python archive (161 MiB), as torchvision fetches it.
pub const CIFAR100_PYTHON_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz";
/// Its MD5, as published with it.
pub const CIFAR100_PYTHON_MD5: &str = "eb9058c3a382ffc7106e4002c42a8d85";

/// Where the data set is fetched from and the MD5 it must have: the official archive, unless
/// `MBV3_CIFAR_URL` (and `MBV3_CIFAR_MD5`, or none to skip the check) point elsewhere, e.g. at a mirror or a
/// local test server.
pub(crate) fn cifar100_source() -> (String, Option<String>) {
    match std::env::var("MBV3_CIFAR_URL") {
        Ok(url) if !url.trim().is_empty() => (url.trim().to_string(), std::env::var("MBV3_CIFAR_MD5").ok()),
        _ => (CIFAR100_PYTHON_URL.to_string(), Some(CIFAR100_PYTHON_MD5.to_string())),
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A read that waits longer than this means the transfer has stalled.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("cannot download {url}: {why}")]
    BadUrl { url: String, why: &'static str },
    #[error(
        "cannot reach {host}: are you offline? ({detail}). Without a network, fetch {url} elsewhere and copy it into the data folder"
    )]
    Offline { host: String, url: String, detail: String },
    #[error("{host} answered HTTP {status} for {url}")]
    Status { host: String, url: String, status: u16 },
    #[error("downloading {url} failed: {detail}")]
    Http { url: String, detail: String },
    #[error("the download of {url} broke off after {received} of {expected} bytes: {detail}; what arrived is kept, and running it again continues from there")]
    Interrupted { url: String, received: u64, expected: String, detail: String },
    #[error("the download of {url} was cancelled after {received} bytes; starting it again continues from there")]
    Cancelled { url: String, received: u64 },
    #[error("{url} gave a file whose MD5 is {actual}, not the expected {expected}: the download is corrupt or the file changed; it was deleted")]
    Checksum { url: String, expected: String, actual: String },
    /// Reading or writing the download's own files (the partial file, a finished one checked again).
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Downloads `url` into `dest_dir` under the URL's file name and returns the file's path.
///
/// The body goes to `NAME.part` first; only a complete body whose MD5 matches `expected_md5` (when given) is
/// renamed to `NAME`. On any failure the `.part` file is removed. If `NAME` already exists and matches the
/// checksum (or no checksum is given), it is returned without downloading again. `progress` is called with
/// the bytes received so far and the total, when the server announced it.
pub fn download(
    url: &str,
    dest_dir: &Path,
    expected_md5: Option<&str>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<PathBuf, DownloadError> {
    download_cancellable(url, dest_dir, expected_md5, progress, &AtomicBool::new(false))
}

/// [`download`] that stops (keeping its `.part`) once `cancel` is set.
pub fn download_cancellable(
    url: &str,
    dest_dir: &Path,
    expected_md5: Option<&str>,
    progress: &mut dyn FnMut(u64, Option<u64>),
    cancel: &AtomicBool,
) -> Result<PathBuf, DownloadError> {
    let (host, name) = host_and_name(url)?;
    let dest = dest_dir.join(name);
    if let Some(len) = already_there(&dest, expected_md5)? {
        progress(len, Some(len));
        return Ok(dest);
    }
    std::fs::create_dir_all(dest_dir).map_err(|source| DownloadError::Io { path: dest_dir.into(), source })?;
    let part = dest_dir.join(format!("{name}.part"));
    let result = fetch(url, &host, &part, progress, cancel).and_then(|md5| verify(url, expected_md5, md5));
    if let Err(e) = result {
        // A transfer that broke off or was cancelled keeps what arrived, for the next attempt; a wrong file or
        // a refused request leaves nothing.
        if !matches!(e, DownloadError::Interrupted { .. } | DownloadError::Cancelled { .. }) {
            let _ = std::fs::remove_file(&part);
        }
        return Err(e);
    }
    std::fs::rename(&part, &dest).map_err(|source| DownloadError::Io { path: dest.clone(), source })?;
    Ok(dest)
}

/// MD5 of a file, as lowercase hex.
pub(crate) fn md5_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The host (for messages) and the last path segment (the file name) of an http(s) URL.
fn host_and_name(url: &str) -> Result<(String, &str), DownloadError> {
    let bad = |why| DownloadError::BadUrl { url: url.into(), why };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("not an http(s) URL"))?;
    let (authority, path) = rest.split_once('/').ok_or_else(|| bad("it names no file"))?;
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(bad("it names no host"));
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad("it names no file"));
    }
    Ok((host.to_string(), name))
}

/// The size of `dest` when it exists and needs no download.
fn already_there(dest: &Path, expected_md5: Option<&str>) -> Result<Option<u64>, DownloadError> {
    let Ok(meta) = std::fs::metadata(dest) else { return Ok(None) };
    if !meta.is_file() {
        return Ok(None);
    }
    let ok = match expected_md5 {
        None => true,
        Some(want) => {
            md5_file(dest).map_err(|source| DownloadError::Io { path: dest.into(), source })?.eq_ignore_ascii_case(want)
        }
    };
    Ok(ok.then_some(meta.len()))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .new_agent()
}

/// Streams the body into `part` (after the bytes it already holds, when the server sends the rest), returning the
/// MD5 of the whole file.
fn fetch(
    url: &str,
    host: &str,
    part: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
    cancel: &AtomicBool,
) -> Result<String, DownloadError> {
    let io = |source| DownloadError::Io { path: part.into(), source };
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent().get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut response = match request.call() {
        // The part is already whole (or longer than the file): start over.
        Err(ureq::Error::StatusCode(416)) if have > 0 => {
            std::fs::remove_file(part).map_err(io)?;
            return fetch(url, host, part, progress, cancel);
        }
        r => r.map_err(|e| request_error(url, host, e))?,
    };
    let resumed = have > 0 && response.status().as_u16() == 206;
    let start = if resumed { have } else { 0 };
    let total = response.body().content_length().map(|n| n + start);
    let mut h = Md5::new();
    let file = if resumed {
        // The bytes already there are part of the checksum.
        let mut f = std::fs::File::open(part).map_err(io)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        std::fs::OpenOptions::new().append(true).open(part).map_err(io)?
    } else {
        std::fs::File::create(part).map_err(io)?
    };
    let mut out = std::io::BufWriter::new(file);
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut done = start;
    let interrupted = |received, detail: String| DownloadError::Interrupted {
        url: url.into(),
        received,
        expected: total.map_or("an unknown number of".into(), |t| t.to_string()),
        detail,
    };
    progress(done, total);
    loop {
        if cancel.load(Ordering::Relaxed) {
            out.flush().map_err(io)?;
            return Err(DownloadError::Cancelled { url: url.into(), received: done });
        }
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                out.flush().map_err(io)?;
                return Err(interrupted(done, e.to_string()));
            }
        };
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io)?;
        done += n as u64;
        progress(done, total);
    }
    // ureq already checks the length against Content-Length; this keeps the promise if that ever changes.
    if total.is_some_and(|t| t != done) {
        out.flush().map_err(io)?;
        return Err(interrupted(done, "the connection closed early".into()));
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(hex(&h.finalize()))
}

fn verify(url: &str, expected: Option<&str>, actual: String) -> Result<(), DownloadError> {
    match expected {
        Some(want) if !want.eq_ignore_ascii_case(&actual) => {
            Err(DownloadError::Checksum { url: url.into(), expected: want.to_ascii_lowercase(), actual })
        }
        _ => Ok(()),
    }
}

/// Sorts a failed request into "offline" (no route, no DNS, refused), an HTTP status, or anything else.
fn request_error(url: &str, host: &str, e: ureq::Error) -> DownloadError {
    use std::io::ErrorKind as K;
    let offline = |detail: String| DownloadError::Offline { host: host.into(), url: url.into(), detail };
    match e {
        ureq::Error::StatusCode(status) => DownloadError::Status { host: host.into(), url: url.into(), status },
        ureq::Error::HostNotFound => offline("the host name does not resolve".into()),
        ureq::Error::ConnectionFailed => offline("the connection failed".into()),
        ureq::Error::Timeout(t @ (ureq::Timeout::Connect | ureq::Timeout::Resolve)) => {
            offline(format!("timed out ({t:?})"))
        }
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::NetworkUnreachable
                    | K::HostUnreachable
                    | K::NetworkDown
                    | K::AddrNotAvailable
                    | K::TimedOut
            ) || io.to_string().contains("lookup address") =>
        {
            offline(io.to_string())
        }
        other => DownloadError::Http { url: url.into(), detail: other.to_string() },
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_and_file_name() {
        assert_eq!(
            host_and_name(CIFAR100_PYTHON_URL).unwrap(),
            ("www.cs.toronto.edu".into(), "cifar-100-python.tar.gz")
        );
        assert_eq!(host_and_name("http://127.0.0.1:8/a/b.tgz?x=1#y").unwrap(), ("127.0.0.1:8".into(), "b.tgz"));
        for bad in ["ftp://h/x", "https://host", "https://host/", "https:///x", "http://h/dir/.."] {
            assert!(matches!(host_and_name(bad), Err(DownloadError::BadUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn md5_matches_the_reference_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        assert!(verify("u", Some("900150983CD24FB0D6963F7D28E17F72"), md5_file(&p).unwrap()).is_ok());
        let err = verify("u", Some("00"), md5_file(&p).unwrap()).unwrap_err().to_string();
        assert!(err.contains("MD5 is 900150983cd24fb0d6963f7d28e17f72, not the expected 00"), "{err}");
    }
}
