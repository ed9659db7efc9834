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
}

pub fn run(a: ExportArgs) -> Result<ExitCode> {
    let out = a.out.clone().unwrap_or_else(|| a.model.with_extension("onnx"));
    let done = export::export_file(&a.model, &out, ExportOptions { softmax: a.softmax })?;
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
