//! Mutation fuzzing of every reader of untrusted bytes: weight files (safetensors and PyTorch zip), the CIFAR
//! python pickle reader, the CIFAR binary reader and image decoding with preprocessing.
//!
//! Each target starts from valid seed files and feeds the reader random mutations of them (bit flips, bytes set
//! to boundary values, length fields overwritten, chunks cut, repeated or spliced in) for a bounded time:
//! `MBV3_FUZZ_SECONDS` per target (default 3; CI runs 60), from the seed `MBV3_FUZZ_SEED` (default: the clock,
//! printed). A reader may refuse an input, but must not panic, abort or hang: a panic fails the test and saves
//! the input under `target/fuzz-crashers/`; an input that runs past 30 s aborts the run with its file saved.
//! Every file under `tests/fuzz_regressions/<target>/` (crashers found so far) is replayed first.
//!
//! This is not coverage-guided (cargo-fuzz needs a nightly toolchain, which this project's machines do not
//! have); the mutations are aimed at the structure these formats share: length prefixes and headers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One random change to `data`.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'(', b')', b'.'];
    let len = data.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        // A length field: 4 or 8 bytes overwritten with a small, huge or boundary value.
        2 if len >= 8 => {
            let i = rng.below(len - 7);
            let v: u64 = match rng.below(4) {
                0 => rng.below(300) as u64,
                1 => u64::MAX >> rng.below(64),
                2 => 1 << rng.below(63),
                _ => rng.next(),
            };
            let n = if rng.below(2) == 0 { 4 } else { 8 };
            data[i..i + n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
        3 if len > 0 => {
            let cut = rng.below(len);
            data.truncate(cut);
        }
        4 if len > 1 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            data.drain(a..b);
        }
        5 if len > 1 => {
            // Repeat a chunk (nesting, repeated opcodes).
            let a = rng.below(len);
            let b = (a + 1 + rng.below(32)).min(len);
            let chunk = data[a..b].to_vec();
            let times = 1 + rng.below(64);
            for _ in 0..times {
                data.splice(a..a, chunk.iter().copied());
            }
        }
        6 if !seeds.is_empty() => {
            // Splice in a piece of another seed.
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() && len > 0 {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(256)).min(other.len());
                let at = rng.below(len);
                data.splice(at..at, other[a..b].iter().copied());
            }
        }
        _ if len > 0 => {
            let i = rng.below(len);
            data.insert(i, rng.next() as u8);
        }
        _ => data.push(rng.next() as u8),
    }
}

fn seconds() -> f64 {
    std::env::var("MBV3_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0)
}

fn seed() -> u64 {
    std::env::var("MBV3_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    }) | 1
}

fn crasher_dir() -> PathBuf {
    root().join("target/fuzz-crashers")
}

fn save_input(name: &str, data: &[u8]) -> PathBuf {
    let dir = crasher_dir();
    let _ = std::fs::create_dir_all(&dir);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let path = dir.join(format!("{name}-{h:016x}.bin"));
    let _ = std::fs::write(&path, data);
    path
}

/// Runs `target` on the regression files, the seeds, then mutations of the seeds for the time budget.
fn fuzz(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8])) {
    let regressions = root().join("tests/fuzz_regressions").join(name);
    let mut replay: Vec<Vec<u8>> = std::fs::read_dir(&regressions)
        .map(|rd| rd.flatten().filter_map(|e| std::fs::read(e.path()).ok()).collect())
        .unwrap_or_default();
    replay.extend(seeds.iter().cloned());
    // A watchdog: an input that runs past 30 s is a hang; save it and abort (a test cannot be interrupted).
    let current = Arc::new(Mutex::new(Vec::<u8>::new()));
    let started = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (current, started, done, name) = (current.clone(), started.clone(), done.clone(), name.to_string());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(500));
                let at = started.load(Ordering::SeqCst);
                if at != 0 && (epoch.elapsed().as_millis() as u64).saturating_sub(at) > 30_000 {
                    let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                    let path = save_input(&format!("{name}-hang"), &input);
                    eprintln!("fuzz {name}: an input ran past 30 s (saved to {})", path.display());
                    std::process::abort();
                }
            }
        });
    }
    let run_one = |data: &[u8]| -> bool {
        if let Ok(mut c) = current.lock() {
            c.clear();
            c.extend_from_slice(data);
        }
        started.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(data))).is_ok();
        started.store(0, Ordering::SeqCst);
        ok
    };
    let mut crashers = Vec::new();
    for data in &replay {
        if !run_one(data) {
            crashers.push(save_input(name, data));
        }
    }
    let s = seed();
    let mut rng = Rng(s);
    let budget = Duration::from_secs_f64(seconds());
    let start = Instant::now();
    let mut execs = 0u64;
    while start.elapsed() < budget {
        let mut data = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(8) {
            mutate(&mut rng, &mut data, &seeds);
        }
        execs += 1;
        if !run_one(&data) {
            crashers.push(save_input(name, &data));
        }
    }
    done.store(true, Ordering::SeqCst);
    eprintln!(
        "fuzz {name}: {execs} inputs in {:.1} s (seed {s}), {} replayed, {} crashers",
        start.elapsed().as_secs_f64(),
        replay.len(),
        crashers.len()
    );
    assert!(crashers.is_empty(), "fuzz {name}: inputs that panicked, saved as {crashers:?}");
}

/// Writes `data` to a per-thread temp file and gives its path: the readers under test take files.
fn as_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(root().join(p)).unwrap()
}

#[test]
fn fuzz_weight_files() {
    let dir = tempfile::tempdir().unwrap();
    let seeds = vec![
        read("tests/fixtures/small_0.25.pth"),
        read("tests/fixtures/small_0.25_si1.weights.safetensors"),
        read("trained_models/mobilenetv3_small_0.25.safetensors"),
    ];
    fuzz("weights", seeds, |data| {
        let path = as_file(dir.path(), "m.safetensors", data);
        let _ = mobilenetv3::model::weights::describe(&path, &Default::default());
        let _ = mobilenetv3::model::weights::load_model(&path, &candle_core::Device::Cpu, &Default::default());
    });
}

#[test]
fn fuzz_cifar_python_pickles() {
    let mut seeds = Vec::new();
    for p in ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"] {
        seeds.push(read(&format!("tests/fixtures/cifar_python/{p}")));
    }
    for p in ["py3_protocol2", "py3_protocol4", "py3_protocol4_fortran", "py3_protocol5"] {
        seeds.push(read(&format!("tests/fixtures/cifar_python/splits/{p}")));
    }
    fuzz("pickle", seeds, |data| {
        let p = Path::new("fuzz/train");
        let _ = mobilenetv3::data::cifar_python::parse_python_split(p, data.to_vec(), None);
        let _ = mobilenetv3::data::cifar_python::parse_meta(p, data);
    });
}

#[test]
fn fuzz_cifar_binary_records() {
    let mut record = Vec::new();
    for i in 0..4u8 {
        record.push(i);
        record.push(i * 20);
        record.extend(std::iter::repeat_n(i, 3072));
    }
    fuzz("binary", vec![record], |data| {
        let _ = mobilenetv3::data::parse_split(Path::new("fuzz/train.bin"), data, None);
    });
}

/// Small images of each decoded format, made with the image crate's encoders.
fn image_seeds() -> Vec<Vec<u8>> {
    use image::{ImageFormat, RgbImage, RgbaImage};
    let rgb = RgbImage::from_fn(24, 18, |x, y| image::Rgb([(x * 10) as u8, (y * 14) as u8, ((x + y) * 5) as u8]));
    let rgba = RgbaImage::from_fn(9, 13, |x, y| image::Rgba([(x * 20) as u8, (y * 9) as u8, 77, (x * y) as u8]));
    let mut seeds = Vec::new();
    for (fmt, alpha) in [
        (ImageFormat::Png, false),
        (ImageFormat::Png, true),
        (ImageFormat::Jpeg, false),
        (ImageFormat::Bmp, false),
        (ImageFormat::Gif, true),
        (ImageFormat::WebP, true),
    ] {
        let mut buf = std::io::Cursor::new(Vec::new());
        let r = if alpha { rgba.write_to(&mut buf, fmt) } else { rgb.write_to(&mut buf, fmt) };
        if r.is_ok() {
            seeds.push(buf.into_inner());
        }
    }
    seeds
}

#[test]
fn fuzz_image_decoding_and_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let meta = mobilenetv3::model::weights::ModelMeta::cifar100(&mobilenetv3::ModelConfig::new(
        mobilenetv3::Variant::Small,
        0.25,
    ));
    fuzz("image", image_seeds(), |data| {
        let path = as_file(dir.path(), "img", data);
        if let Ok(img) = mobilenetv3::data::preprocess::decode(&path) {
            let input = mobilenetv3::classify::prepare_image(&meta, &img);
            assert_eq!(input.len(), 3 * 32 * 32);
        }
    });
}

/// The records of the PyTorch fixture, by name, and its `data.pkl`.
fn pth_parts() -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    use std::io::Read;
    let file = std::fs::File::open(root().join("tests/fixtures/small_0.25.pth")).unwrap();
    let mut zip = zip::ZipArchive::new(file).unwrap();
    let (mut records, mut pickle) = (Vec::new(), Vec::new());
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).unwrap();
        let name = e.name().unwrap().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        if name.ends_with("data.pkl") {
            pickle = bytes;
        } else {
            records.push((name, bytes));
        }
    }
    (records, pickle)
}

#[test]
fn fuzz_pytorch_checkpoint_pickles() {
    // Mutating the zip itself mostly breaks its checksums; here the pickle is mutated and the zip rebuilt
    // around it, so that every input reaches the pickle reader and, when it parses, the tensor checks.
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (records, pickle) = pth_parts();
    fuzz("pth", vec![pickle], |data| {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            z.start_file("small_0.25/data.pkl", opts).unwrap();
            z.write_all(data).unwrap();
            for (name, bytes) in &records {
                z.start_file(name.as_str(), opts).unwrap();
                z.write_all(bytes).unwrap();
            }
            z.finish().unwrap();
        }
        let path = as_file(dir.path(), "m.pth", &buf.into_inner());
        let _ = mobilenetv3::model::weights::describe(&path, &Default::default());
        let _ = mobilenetv3::model::weights::load_model(&path, &candle_core::Device::Cpu, &Default::default());
    });
}
