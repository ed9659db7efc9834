//! Finding a run's data: CIFAR-100 in whichever official layout a folder holds, or the user's folder of class
//! folders; either way a [`DataSet`].

use super::{Result, TrainConfig, TrainError};
use crate::data::{self, DataSet, ImageFolder, SplitOptions};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// Reads CIFAR-100 from `path` in whichever official layout it holds: the binary version (`train.bin`,
/// `test.bin`), the python version (`cifar-100-python/`), or either original `.tar.gz` archive.
/// `Ok(None)` when there is no data set there at all.
pub fn open_dataset(path: &Path) -> Result<Option<DataSet>> {
    if is_archive(path) {
        return Ok(Some(crate::data::cifar_python::load_tar_gz(path)?));
    }
    if data::locate(path).is_ok() {
        return Ok(Some(data::load(path)?));
    }
    if crate::data::cifar_python::locate_python(path).is_ok() {
        return Ok(Some(crate::data::cifar_python::load_python_dir(path)?));
    }
    for name in ARCHIVES {
        if is_archive(&path.join(name)) {
            return Ok(Some(crate::data::cifar_python::load_tar_gz(&path.join(name))?));
        }
    }
    Ok(None)
}

/// Whether `path` looks like it holds CIFAR-100 (without reading it).
pub fn has_dataset(path: &Path) -> bool {
    is_archive(path)
        || data::locate(path).is_ok()
        || crate::data::cifar_python::locate_python(path).is_ok()
        || ARCHIVES.iter().any(|n| is_archive(&path.join(n)))
}

/// The official archive names looked for inside a data folder.
const ARCHIVES: [&str; 2] = ["cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"];

fn is_archive(p: &Path) -> bool {
    let n = p.to_string_lossy();
    p.is_file() && (n.ends_with(".tar.gz") || n.ends_with(".tgz"))
}

/// Loads the data set a config names: its folder of images, or CIFAR-100 (from the folder it names, or the first
/// default folder that has it) with its limits applied.
pub fn load_data(cfg: &TrainConfig) -> Result<DataSet> {
    load_data_with_progress(cfg, |_, _| {}, &AtomicBool::new(false))
}

/// [`load_data`], telling `progress` the images decoded and the total while a folder of images is decoded;
/// setting `cancel` stops it.
pub fn load_data_with_progress(
    cfg: &TrainConfig,
    progress: impl Fn(usize, usize) + Sync,
    cancel: &AtomicBool,
) -> Result<DataSet> {
    if let Some(dir) = &cfg.images {
        let options = SplitOptions { val_fraction: cfg.val_fraction, seed: cfg.seed };
        let folder = ImageFolder::scan(dir, &options, |_| {}, cancel)?;
        return Ok(folder.load(cfg.image_size, progress, cancel)?);
    }
    let dirs = match &cfg.data_dir {
        Some(d) => vec![d.clone()],
        None => data::default_dirs(),
    };
    for d in &dirs {
        if let Some(mut ds) = open_dataset(d)? {
            if let Some(n) = cfg.limit_train {
                ds.train.truncate(n);
            }
            if let Some(n) = cfg.limit_test {
                ds.test.truncate(n);
            }
            return Ok(ds);
        }
    }
    Err(TrainError::NoData { searched: dirs })
}

/// What a model is evaluated on when the caller names no data: the run config that loads it (its test split
/// is the data) and a phrase naming it. A model trained on a folder of images is evaluated on that folder's
/// validation images, held out as its run held them out (the folder, share and seed come from the run's
/// history beside the model file: `<stem>.history.json`); any other model on CIFAR-100's test split, from
/// `cifar_dir` or the default places.
pub fn evaluation_config(
    model: &Path,
    meta: &crate::model::weights::ModelMeta,
    cifar_dir: Option<std::path::PathBuf>,
) -> Result<(TrainConfig, String)> {
    let mut cfg = TrainConfig::reference(meta.config.clone());
    let history = model.with_extension("history.json");
    let run = super::History::load(&history).ok().filter(|h| h.config.images.is_some());
    if let Some(run) = run {
        let images = run.config.images.clone().unwrap_or_default();
        cfg.images = Some(images.clone());
        cfg.val_fraction = run.config.val_fraction;
        cfg.seed = run.config.seed;
        cfg.image_size = meta.image_size;
        let what = format!(
            "the validation images of {} ({:.0}% of each class held out with seed {}, or its val/ folder)",
            images.display(),
            run.config.val_fraction * 100.0,
            run.config.seed
        );
        return Ok((cfg, what));
    }
    let cifar: Vec<String> = crate::data::labels::CIFAR100_FINE.iter().map(|s| s.to_string()).collect();
    if meta.class_names != cifar {
        return Err(TrainError::UnknownEvaluationData { model: model.to_path_buf(), history });
    }
    cfg.data_dir = cifar_dir;
    let what = match &cfg.data_dir {
        Some(d) => format!("the CIFAR-100 test split in {}", d.display()),
        None => "the CIFAR-100 test split".to_string(),
    };
    Ok((cfg, what))
}
