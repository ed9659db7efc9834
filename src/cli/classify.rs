use anyhow::{bail, Context, Result};
use clap::Args;
use mobilenetv3::classify::{self, Classifier, FileResult};
use mobilenetv3::data::preprocess::decode;
use mobilenetv3::exec::inference::GradCam;
use mobilenetv3::model::weights::LoadOptions;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ClassifyArgs {
    /// Model file (.safetensors or .pth); default: the most accurate model in trained_models/ (by the top-1
    /// its file records).
    #[arg(long, conflicts_with = "all_models")]
    model: Option<PathBuf>,
    /// Classify with every model in trained_models/, one after the other.
    #[arg(long)]
    all_models: bool,
    /// How many labels to report per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print one JSON array instead of text.
    #[arg(long)]
    json: bool,
    /// Write a Grad-CAM overlay per image into this folder (`<name>.cam.png`: where the model found its top
    /// class); with --json each row also gets the map's peak (x, y as fractions of the image).
    #[arg(long, value_name = "DIR", conflicts_with = "all_models")]
    cam: Option<PathBuf>,
    /// Also write the results as CSV to FILE: one row per image and model (path, model, the top labels with
    /// their confidences, or the error), for folders of thousands of photos.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Initial stride for .pth files, which do not record it.
    #[arg(long, default_value_t = 1)]
    si: usize,
    /// Images or folders of images; default: test_images/.
    paths: Vec<PathBuf>,
}

pub fn run(a: ClassifyArgs) -> Result<ExitCode> {
    let places = mobilenetv3::paths::AppPaths::locate(&crate::cli::bundle::BUNDLE);
    let opts = LoadOptions { initial_stride: Some(a.si), ..Default::default() };
    // Each model with its classifier where choosing it already loaded it.
    let models: Vec<(PathBuf, Option<Classifier>)> = match &a.model {
        Some(m) => vec![(m.clone(), None)],
        None => {
            let dirs = places.model_dirs();
            let (ranked, rejected) = classify::models_by_accuracy(&dirs, &opts);
            for (path, reason) in &rejected {
                eprintln!("skipping model file {}: {reason}", path.display());
            }
            if ranked.is_empty() {
                let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                bail!(
                    "no usable model files in {}; pass --model FILE or train one with `mobilenetv3 train`",
                    names.join(" or ")
                );
            }
            if a.all_models {
                ranked.into_iter().map(|(path, _)| (path, None)).collect()
            } else {
                let (path, classifier) = most_accurate_that_loads(ranked, &opts)?;
                vec![(path, Some(classifier))]
            }
        }
    };
    let paths = if a.paths.is_empty() { vec![places.samples.clone()] } else { a.paths.clone() };
    let files = classify::collect_images(&paths);
    if files.is_empty() {
        bail!("no images found in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let k = a.top.max(1);
    let mut failed = false;
    let mut json_rows = Vec::new();
    let mut csv = String::new();
    let several = models.len() > 1;
    for (mi, (model_path, preloaded)) in models.into_iter().enumerate() {
        let loaded = match preloaded {
            Some(c) => Ok(c),
            None => Classifier::load(&model_path, &candle_core::Device::Cpu, &opts),
        };
        let classifier = match loaded {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let results = classifier.classify_files(&files, k)?;
        if a.csv.is_some() {
            csv_rows(&mut csv, &results, &model_path, k);
        }
        let cams = match &a.cam {
            Some(dir) => write_cams(&classifier, &results, dir)?,
            None => Vec::new(),
        };
        if a.json {
            for (i, r) in results.iter().enumerate() {
                let mut row = json_row(r, several, &model_path);
                if let Some(Some((file, cam))) = cams.get(i) {
                    let (x, y) = cam.peak();
                    let class = classifier.meta.class_names.get(cam.class).cloned().unwrap_or_default();
                    row["cam"] = json!({"file": file.display().to_string(), "class": class, "peak": [x, y]});
                }
                json_rows.push(row);
            }
        } else {
            if several {
                if mi > 0 {
                    println!();
                }
                println!("== {} ({})", model_path.display(), classifier.meta.config.name());
            }
            let width = files.iter().map(|f| display_name(f).len()).max().unwrap_or(0);
            for r in &results {
                if let Ok(top) = &r.outcome {
                    let best = &top[0];
                    let rest: Vec<String> =
                        top[1..].iter().map(|p| format!("{} {:.1}%", p.label, p.prob * 100.0)).collect();
                    println!(
                        "{:width$}  {:<14} {:5.1}%   {}",
                        display_name(&r.path),
                        best.label,
                        best.prob * 100.0,
                        rest.join(", ")
                    );
                }
            }
        }
        for r in &results {
            if let Err(e) = &r.outcome {
                failed = true;
                if mi == 0 {
                    eprintln!("error: {}: {e}", r.path.display());
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json_rows)?);
    }
    if let Some(file) = &a.csv {
        let header = csv_header(k);
        mobilenetv3::fsutil::write_atomic(file, format!("{header}\n{csv}").as_bytes())
            .with_context(|| format!("writing {}", file.display()))?;
        eprintln!("results written to {}", file.display());
    }
    if let Some(dir) = &a.cam {
        eprintln!("Grad-CAM overlays written to {}", dir.display());
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Grad-CAM overlays of the classified files (those that decoded) into `dir`, each written atomically as
/// `<file name>.cam.png`; per result, the file and its map.
fn write_cams(
    classifier: &Classifier,
    results: &[FileResult],
    dir: &std::path::Path,
) -> Result<Vec<Option<(PathBuf, GradCam)>>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for r in results {
        if r.outcome.is_err() {
            out.push(None);
            continue;
        }
        let Ok(img) = decode(&r.path) else {
            out.push(None);
            continue;
        };
        let Some(cam) = classifier.grad_cam(&img, None) else { bail!("Grad-CAM runs on the CPU only") };
        let png = encode_png(&mobilenetv3::explain::overlay(&img, &cam, 512))?;
        let file = dir.join(format!("{}.cam.png", display_name(&r.path)));
        mobilenetv3::fsutil::write_atomic(&file, &png).with_context(|| format!("writing {}", file.display()))?;
        out.push(Some((file, cam)));
    }
    Ok(out)
}

fn encode_png(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// The first of `ranked` (most accurate first) that loads, named on stderr; those that fail are skipped with
/// their reason, as the Classify tab does.
fn most_accurate_that_loads(ranked: Vec<classify::RankedModel>, opts: &LoadOptions) -> Result<(PathBuf, Classifier)> {
    for (path, top1) in ranked {
        match Classifier::load(&path, &candle_core::Device::Cpu, opts) {
            Ok(classifier) => {
                let top1 = top1.map(|t| format!(", top-1 {:.2}%", t * 100.0)).unwrap_or_default();
                eprintln!(
                    "model: {}{top1} (the most accurate in trained_models/; --model FILE picks another)",
                    path.display()
                );
                return Ok((path, classifier));
            }
            Err(e) => eprintln!("skipping model file {}: {e}", path.display()),
        }
    }
    bail!("none of the model files could be loaded (each is named above with the reason)")
}

fn display_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

fn csv_header(k: usize) -> String {
    let mut cols = vec!["path".to_string(), "model".to_string()];
    for i in 1..=k {
        cols.push(format!("label_{i}"));
        cols.push(format!("confidence_{i}"));
    }
    cols.push("error".into());
    cols.join(",")
}

/// One CSV row per result: path, model, k label/confidence pairs (empty where the model has fewer classes or
/// the file failed), the error.
fn csv_rows(out: &mut String, results: &[FileResult], model: &std::path::Path, k: usize) {
    for r in results {
        let mut cols = vec![csv_field(&r.path.display().to_string()), csv_field(&model.display().to_string())];
        let (top, error) = match &r.outcome {
            Ok(top) => (top.as_slice(), String::new()),
            // One line per image, whatever the decoder's message holds.
            Err(e) => (&[][..], e.split_whitespace().collect::<Vec<_>>().join(" ")),
        };
        for i in 0..k {
            match top.get(i) {
                Some(p) => {
                    cols.push(csv_field(&p.label));
                    cols.push(format!("{:.6}", p.prob));
                }
                None => cols.extend([String::new(), String::new()]),
            }
        }
        cols.push(csv_field(&error));
        out.push_str(&cols.join(","));
        out.push('\n');
    }
}

/// A CSV field, quoted where it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn json_row(r: &FileResult, with_model: bool, model: &std::path::Path) -> serde_json::Value {
    let mut v = match &r.outcome {
        Ok(top) => json!({"path": r.path.display().to_string(), "top": top}),
        Err(e) => json!({"path": r.path.display().to_string(), "error": e}),
    };
    if with_model {
        v["model"] = json!(model.display().to_string());
    }
    v
}
