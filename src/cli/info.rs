use anyhow::{bail, Result};
use clap::Args;
use mobilenetv3::model::arch::{ModelConfig, Variant, INPUT_SIZE};
use mobilenetv3::model::weights::{self, LoadOptions};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InfoArgs {
    /// A model file to describe instead of an architecture.
    file: Option<PathBuf>,
    /// small or large.
    #[arg(long, default_value = "small")]
    model: String,
    /// Width multiplier.
    #[arg(long, default_value_t = 1.0)]
    width: f64,
    /// Initial stride (1 for CIFAR, 2 for the paper's layout).
    #[arg(long, default_value_t = 1)]
    si: usize,
    /// Side in pixels of the square input the MACs and layer sizes are given for (default: a model file's
    /// own input size, else 32).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..=512))]
    size: Option<usize>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<ExitCode> {
    let (config, training, source, own_size) = match &a.file {
        Some(f) => {
            let opts = LoadOptions { initial_stride: Some(a.si), ..Default::default() };
            let loaded = weights::load_model(f, &candle_core::Device::Cpu, &opts)?;
            let m = loaded.meta;
            (m.config.clone(), m.training.clone(), Some(f.display().to_string()), Some(m.image_size))
        }
        None => {
            let Some(variant) = Variant::parse(&a.model) else {
                bail!("--model must be small or large, got {}", a.model)
            };
            let c = ModelConfig::new(variant, a.width).with_initial_stride(a.si);
            if let Err(e) = c.validate() {
                bail!(e);
            }
            (c, None, None, None)
        }
    };
    let size = a.size.or(own_size).unwrap_or(INPUT_SIZE);
    let spec = config.spec();
    let layers = spec.layers(size);
    let params = spec.parameter_count();
    let macs = spec.macs(size);
    if a.json {
        let v = json!({
            "file": source, "variant": config.variant, "width": config.width, "si": config.initial_stride,
            "name": config.name(), "params": params, "macs": macs, "input": [3, size, size],
            "layers": layers, "training": training,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(s) = &source {
        println!("file:        {s}");
    }
    println!("model:       MobileNetV3-{} width {} (si {})", config.variant, config.width, config.initial_stride);
    println!("parameters:  {}", group(params));
    println!("MACs:        {} per {size}x{size} image ({:.1} M)", group(macs), macs as f64 / 1e6);
    if let Some(t) = &training {
        println!("training:    {t}");
    }
    println!();
    println!("{:<17} {:<40} {:>11} {:>11} {:>10} {:>12}", "layer", "kind", "in", "out", "params", "MACs");
    for l in &layers {
        println!(
            "{:<17} {:<40} {:>11} {:>11} {:>10} {:>12}",
            l.name,
            l.kind,
            format!("{}x{}x{}", l.input.0, l.input.1, l.input.1),
            format!("{}x{}x{}", l.output.0, l.output.1, l.output.1),
            group(l.params),
            group(l.macs)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// 1234567 -> "1,234,567".
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
