use anyhow::Result;
use clap::Args;
use mobilenetv3::export::{self, ExportOptions, INPUT, LOGITS, OPSET, PROBABILITIES};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ExportArgs {
    /// The model file (.safetensors, or .pth with --si).
    model: PathBuf,
    /// Where to write the ONNX file; default: beside the model, with the extension .onnx.
    out: Option<PathBuf>,
    /// End the graph with a softmax: output `probabilities` instead of `logits`.
    #[arg(long)]
    softmax: bool,
    /// Declare this input size (pixels) instead of the model's own: to time the network at another size in
    /// another runtime (its accuracy holds at its own size only).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..=512))]
    size: Option<usize>,
    /// Lay the network out with this initial stride (1: CIFAR's, 2: the paper's layout for photo sizes).
    #[arg(long)]
    si: Option<usize>,
}

pub fn run(a: ExportArgs) -> Result<ExitCode> {
    let out = a.out.clone().unwrap_or_else(|| a.model.with_extension("onnx"));
    let done = export::export_file(
        &a.model,
        &out,
        ExportOptions { softmax: a.softmax, image_size: a.size, initial_stride: a.si },
    )?;
    let output = if a.softmax { PROBABILITIES } else { LOGITS };
    println!(
        "exported {} ({}, {} classes) to {} ({:.1} MB, {} nodes, ONNX opset {OPSET}): input `{INPUT}` float32 \
         (batch, 3, {s}, {s}), output `{output}` (batch, {})",
        a.model.display(),
        done.model_name,
        done.classes,
        done.path.display(),
        done.bytes as f64 / 1e6,
        done.nodes,
        done.classes,
        s = done.image_size,
    );
    Ok(ExitCode::SUCCESS)
}
