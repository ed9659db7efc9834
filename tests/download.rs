//! The downloader against a tiny HTTP server on 127.0.0.1 that each test starts itself; never the internet.
//! The archive served is a miniature `cifar-100-python.tar.gz` in the real pickle format.

use md5::{Digest, Md5};
use mobilenetv3::data::cifar_python::{load_tar_gz_expecting, Expected};
use mobilenetv3::data::download::{download, DownloadError};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::thread::JoinHandle;

const NAME: &str = "cifar-100-python.tar.gz";

/// A miniature official archive: the fixture pickles under `cifar-100-python/`.
fn archive() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar_python/cifar-100-python");
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for name in ["train", "test", "meta"] {
        let data = std::fs::read(dir.join(name)).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("cifar-100-python/{name}"), data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// How the server answers.
#[derive(Clone, Copy)]
enum Reply {
    Whole,
    /// Announces the whole length, sends half, closes.
    Half,
    NotFound,
}

/// Serves `body` to exactly `requests` connections on 127.0.0.1, then stops. Returns the base URL and, from the
/// thread, the start of each request's `Range: bytes=N-` (None without one). A whole reply honours the range
/// with `206 Partial Content`, as the official server does.
fn serve(body: Vec<u8>, reply: Reply, requests: usize) -> (String, JoinHandle<Vec<Option<usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut ranges = Vec::new();
        for _ in 0..requests {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            let mut range = None;
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                let lower = line.to_ascii_lowercase();
                if let Some(r) = lower.strip_prefix("range: bytes=") {
                    range = r.trim().trim_end_matches('-').parse::<usize>().ok();
                }
                line.clear();
            }
            ranges.push(range);
            let mut s = reader.into_inner();
            let from = range.filter(|_| matches!(reply, Reply::Whole)).unwrap_or(0).min(body.len());
            let (status, send) = match reply {
                Reply::Whole if from > 0 => ("206 Partial Content", &body[from..]),
                Reply::Whole => ("200 OK", &body[..]),
                Reply::Half => ("200 OK", &body[..body.len() / 2]),
                Reply::NotFound => ("404 Not Found", &b""[..]),
            };
            let len = if matches!(reply, Reply::NotFound) { 0 } else { body.len() - from };
            let extra = if from > 0 {
                format!("Content-Range: bytes {from}-{}/{}\r\n", body.len() - 1, body.len())
            } else {
                String::new()
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/x-gzip\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n"
            );
            // The client may hang up first when it sees an error; that is fine.
            let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(send)).and_then(|_| s.flush());
        }
        ranges
    });
    (base, handle)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn a_good_download_is_verified_renamed_and_loads() {
    let body = archive();
    let md5 = md5_hex(&body);
    let (base, server) = serve(body.clone(), Reply::Whole, 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("data");
    let mut calls = Vec::new();
    let path = download(&format!("{base}/files/{NAME}"), &dest, Some(&md5), &mut |d, t| calls.push((d, t))).unwrap();
    server.join().unwrap();
    assert_eq!(path, dest.join(NAME));
    assert_eq!(entries(&dest), vec![NAME.to_string()]);
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let n = body.len() as u64;
    assert_eq!(calls.first(), Some(&(0, Some(n))));
    assert_eq!(calls.last(), Some(&(n, Some(n))));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));

    let c = load_tar_gz_expecting(&path, Expected::ANY).unwrap();
    assert_eq!((c.train.len(), c.test.len(), c.class_names.len()), (4, 2, 100));

    // The server is gone now: a verified file already in place needs no second request.
    let again = download(&format!("{base}/files/{NAME}"), &dest, Some(&md5), &mut |_, _| {}).unwrap();
    assert_eq!(again, path);
}

#[test]
fn a_wrong_checksum_leaves_no_file() {
    let body = archive();
    let (base, server) = serve(body.clone(), Reply::Whole, 1);
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0123456789abcdef0123456789abcdef";
    let err = download(&format!("{base}/{NAME}"), dir.path(), Some(wrong), &mut |_, _| {}).unwrap_err();
    server.join().unwrap();
    assert!(matches!(err, DownloadError::Checksum { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(wrong) && msg.contains(&md5_hex(&body)), "{msg}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn nothing_listening_means_offline() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // dropped: nothing listens there now
    let dir = tempfile::tempdir().unwrap();
    let err = download(&format!("http://127.0.0.1:{port}/{NAME}"), dir.path(), None, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, DownloadError::Offline { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("cannot reach 127.0.0.1:{port}: are you offline?")), "{msg}");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_body_cut_short_is_kept_as_part_and_the_next_attempt_fetches_only_the_rest() {
    let body = archive();
    let md5 = md5_hex(&body);
    let (base, server) = serve(body.clone(), Reply::Half, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    let err = download(&format!("{base}/{NAME}"), dir.path(), Some(&md5), &mut |d, _| last = d).unwrap_err();
    server.join().unwrap();
    assert!(matches!(err, DownloadError::Interrupted { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("of {} bytes", body.len())) && msg.contains("continues"), "{msg}");
    assert!(last < body.len() as u64);
    // Never the final name; the part received is kept.
    assert!(!dir.path().join(NAME).exists());
    let part = dir.path().join(format!("{NAME}.part"));
    assert_eq!(std::fs::read(&part).unwrap(), &body[..body.len() / 2]);

    // The next attempt asks for the rest, checks the MD5 of the whole file, and renames it.
    let (base, server) = serve(body.clone(), Reply::Whole, 1);
    let mut first = None;
    let path = download(&format!("{base}/{NAME}"), dir.path(), Some(&md5), &mut |d, t| {
        first.get_or_insert((d, t));
    })
    .unwrap();
    assert_eq!(server.join().unwrap(), vec![Some(body.len() / 2)]);
    assert_eq!(first, Some(((body.len() / 2) as u64, Some(body.len() as u64))));
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert_eq!(entries(dir.path()), vec![NAME.to_string()]);
}

#[test]
fn a_cancelled_download_keeps_its_part() {
    let body = archive();
    let (base, server) = serve(body.clone(), Reply::Whole, 1);
    let dir = tempfile::tempdir().unwrap();
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let err = mobilenetv3::data::download::download_cancellable(
        &format!("{base}/{NAME}"),
        dir.path(),
        None,
        &mut |_, _| {},
        &cancel,
    )
    .unwrap_err();
    server.join().unwrap();
    assert!(matches!(err, DownloadError::Cancelled { .. }), "{err:?}");
    assert!(err.to_string().contains("continues"), "{err}");
    assert_eq!(entries(dir.path()), vec![format!("{NAME}.part")]);
}

#[test]
fn an_http_error_status_is_reported() {
    let (base, server) = serve(Vec::new(), Reply::NotFound, 1);
    let dir = tempfile::tempdir().unwrap();
    let err = download(&format!("{base}/{NAME}"), dir.path(), None, &mut |_, _| {}).unwrap_err();
    server.join().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("answered HTTP 404"), "{msg}");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_file_in_place_that_fails_the_checksum_is_downloaded_again() {
    let body = archive();
    let (base, server) = serve(body.clone(), Reply::Whole, 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(NAME), b"an old, broken copy").unwrap();
    let path = download(&format!("{base}/{NAME}"), dir.path(), Some(&md5_hex(&body)), &mut |_, _| {}).unwrap();
    server.join().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert_eq!(entries(dir.path()), vec![NAME.to_string()]);
}
