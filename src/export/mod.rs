//! ONNX export: a model file becomes a standard ONNX graph that ONNX Runtime (and any runtime that reads
//! opset 17) runs without this app or PyTorch.
//!
//! The graph uses standard operators only (Conv, HardSwish, HardSigmoid, Relu, GlobalAveragePool, Mul, Add,
//! Flatten, Gemm, and Softmax when asked for), with every BatchNorm folded into the convolution before it
//! (its running statistics: the evaluation-mode network), a symbolic batch dimension, and the class names,
//! input size and normalisation in the model's metadata. Nodes and weights are named after the PyTorch
//! modules they come from (`bottlenecks_1.3.depthwise_1`), so the graph reads like the reference network.
//!
//! Written with prost, the protobuf crate the Tokio project maintains: its derive macros let the few schema
//! messages the export needs be declared in Rust ([`proto`]) with no `protoc` or build script, and the same
//! messages decode the file again in the tests.

pub mod proto;

use crate::model::arch::Activation;
use crate::model::names::{self, ConvBnNames, DenseNames};
use crate::model::weights::{load_model, LoadOptions, LoadedModel, WeightsError};
use proto::*;
use std::path::{Path, PathBuf};

/// The ONNX IR version written (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;
/// The standard operator set the graph is written against: HardSwish needs 14; CI checks the files with
/// ONNX Runtime 1.32 (`tools/onnx/requirements.txt`).
pub const OPSET: i64 = 17;
/// The graph's input: normalised RGB images, (batch, 3, size, size).
pub const INPUT: &str = "input";
/// The graph's output without `--softmax`: one row of class scores per image.
pub const LOGITS: &str = "logits";
/// The graph's output with `--softmax`.
pub const PROBABILITIES: &str = "probabilities";

/// What to export besides the network.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportOptions {
    /// End the graph with a softmax, so that it outputs probabilities instead of logits.
    pub softmax: bool,
    /// Declare this input side instead of the model's own (e.g. to time a 32-pixel model at 224 in another
    /// runtime; its accuracy is the model's at its own size only).
    pub image_size: Option<usize>,
    /// Lay the network out with this initial stride (1: CIFAR's, 2: the paper's), as `info FILE --si` does.
    pub initial_stride: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Model(#[from] WeightsError),
    #[error("{0}: the export would replace the model it is made from; choose another file name")]
    SameFile(PathBuf),
    #[error("cannot lay the network out that way: {0}")]
    Layout(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("reading the weights: {0}")]
    Candle(#[from] candle_core::Error),
}

/// What [`export_file`] wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    pub path: PathBuf,
    pub bytes: usize,
    pub nodes: usize,
    pub model_name: String,
    pub classes: usize,
    pub image_size: usize,
}

/// Exports the model file at `model` to `out` (written atomically: a failed export leaves no file behind,
/// and an existing `out` is either kept or wholly replaced).
pub fn export_file(model: &Path, out: &Path, opts: ExportOptions) -> Result<Exported, ExportError> {
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(model), std::fs::canonicalize(out)) {
        if a == b {
            return Err(ExportError::SameFile(out.to_path_buf()));
        }
    }
    let load = LoadOptions { initial_stride: opts.initial_stride, ..Default::default() };
    let mut loaded = load_model(model, &candle_core::Device::Cpu, &load)?;
    if let Some(size) = opts.image_size {
        loaded.meta.image_size = size;
    }
    // A file's recorded stride is what loading keeps; the option relays the same weights.
    if let Some(si) = opts.initial_stride {
        loaded.meta.config = loaded.meta.config.clone().with_initial_stride(si);
        loaded.meta.config.validate().map_err(|e| ExportError::Layout(e.to_string()))?;
    }
    let onnx = onnx_model(&loaded, opts)?;
    let bytes = prost::Message::encode_to_vec(&onnx);
    crate::fsutil::write_atomic(out, &bytes)
        .map_err(|source| ExportError::Write { path: out.to_path_buf(), source })?;
    Ok(Exported {
        path: out.to_path_buf(),
        bytes: bytes.len(),
        nodes: onnx.graph.as_ref().map_or(0, |g| g.node.len()),
        model_name: loaded.meta.config.name(),
        classes: loaded.meta.config.num_classes,
        image_size: loaded.meta.image_size,
    })
}

/// The ONNX model of a loaded network (evaluation mode: BatchNorm's running statistics, no dropout).
pub fn onnx_model(loaded: &LoadedModel, opts: ExportOptions) -> candle_core::Result<ModelProto> {
    let meta = &loaded.meta;
    let spec = meta.config.spec();
    let mut g = GraphBuilder { params: &loaded.params, nodes: Vec::new(), initializers: Vec::new() };

    let mut x = g.conv_bn(INPUT, &names::stem(), names::STEM_LAYER, spec.initial_stride, 1)?;
    x = g.activation(&x, Activation::HardSwish, names::STEM_LAYER);
    for (i, b) in spec.blocks.iter().enumerate() {
        let (n, layer) = (names::block(i), names::block_label(i));
        let expand = format!("{layer}.pointwise_0");
        let mut h = g.conv_bn(&x, &n.expand, &expand, 1, 1)?;
        h = g.activation(&h, b.act, &expand);
        let depthwise = format!("{layer}.depthwise_1");
        h = g.conv_bn(&h, &n.depthwise, &depthwise, b.stride, b.expanded)?;
        h = g.activation(&h, b.act, &depthwise);
        if b.squeeze_excite {
            h =
                g.squeeze_excite(&h, &n.squeeze_excite.reduce, &n.squeeze_excite.expand, &format!("{layer}.se_block"))?;
        }
        let project = format!("{layer}.pointwise_2");
        let y = g.conv_bn(&h, &n.project, &project, 1, 1)?;
        x = if b.residual() { g.node("Add", &[&y, &x], &format!("{layer}.residual"), Vec::new()) } else { y };
    }
    let last = g.conv_bn(&x, &names::last_conv(), names::LAST_LAYER, 1, 1)?;
    let last = g.activation(&last, Activation::HardSwish, names::LAST_LAYER);
    let pooled = g.node("GlobalAveragePool", &[&last], "pool", Vec::new());
    let flat = g.node("Flatten", &[&pooled], "flatten", vec![int("axis", 1)]);
    let hidden = g.dense(&flat, &names::hidden(), names::HIDDEN_LAYER, names::HIDDEN_LAYER)?;
    let hidden = g.activation(&hidden, Activation::HardSwish, names::HIDDEN_LAYER);
    let output = if opts.softmax {
        let scores = g.dense(&hidden, &names::classifier(), names::CLASSIFIER_LAYER, names::CLASSIFIER_LAYER)?;
        g.node_to("Softmax", &[&scores], "softmax", PROBABILITIES, vec![int("axis", 1)])
    } else {
        g.dense(&hidden, &names::classifier(), names::CLASSIFIER_LAYER, LOGITS)?
    };

    let size = meta.image_size as i64;
    let classes = meta.config.num_classes as i64;
    let graph = GraphProto {
        node: g.nodes,
        name: Some(format!("mobilenetv3_{}", meta.config.name())),
        initializer: g.initializers,
        doc_string: None,
        input: vec![value_info(INPUT, &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(size), Dim::Fixed(size)])],
        output: vec![value_info(&output, &[Dim::Batch, Dim::Fixed(classes)])],
    };
    let c = &meta.config;
    let list = |v: &[f32]| serde_json::to_string(v).unwrap_or_default();
    let metadata = [
        ("model", format!("MobileNetV3-{} width {} (initial stride {})", c.variant, c.width, c.initial_stride)),
        ("variant", c.variant.name().to_string()),
        ("width", crate::model::arch::format_width(c.width)),
        ("initial_stride", c.initial_stride.to_string()),
        ("class_names", serde_json::to_string(&meta.class_names).unwrap_or_default()),
        ("input_size", meta.image_size.to_string()),
        ("input", format!("{INPUT}: float32 (batch, 3, {size}, {size}), RGB, (pixel / 255 - mean) / std per channel")),
        ("mean", list(&meta.mean)),
        ("std", list(&meta.std)),
        ("output", output.clone()),
    ];
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("mobilenetv3-studio".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: Some(1),
        doc_string: Some(format!(
            "MobileNetV3-{} ({}), {} classes, {size}x{size} input; exported by MobileNetV3 Studio",
            c.variant,
            c.name(),
            c.num_classes
        )),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(k, v)| StringStringEntryProto { key: Some(k.into()), value: Some(v) })
            .collect(),
    })
}

/// The nodes and initializers of the graph as it is built, over the model's parameters.
struct GraphBuilder<'a> {
    params: &'a crate::model::params::ParamStore,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl GraphBuilder<'_> {
    /// Adds a node named `name` whose one output is also called `name`; returns that name.
    fn node(&mut self, op: &str, inputs: &[&str], name: &str, attribute: Vec<AttributeProto>) -> String {
        self.node_to(op, inputs, name, name, attribute)
    }

    /// Adds a node named `name` with one output called `output`; returns `output`.
    fn node_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        name: &str,
        output: &str,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(name.to_string()),
            op_type: Some(op.to_string()),
            domain: None,
            attribute,
        });
        output.to_string()
    }

    fn initializer(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(FLOAT),
            name: Some(name.to_string()),
            raw_data: Some(raw),
        });
        name.to_string()
    }

    /// Convolution with its BatchNorm folded in, as the CPU inference plan folds it
    /// ([`crate::exec::inference::fold`]).
    fn conv_bn(
        &mut self,
        x: &str,
        n: &ConvBnNames,
        layer: &str,
        stride: usize,
        groups: usize,
    ) -> candle_core::Result<String> {
        let dims = self.params.tensor(&n.weight).dims().to_vec();
        let (out_c, k) = (dims[0], dims[2]);
        let crate::exec::inference::Folded { w: folded, b: bias } = crate::exec::inference::fold(self.params, n)?;
        let w_name = self.initializer(&format!("{layer}.weight"), &dims, &folded);
        let b_name = self.initializer(&format!("{layer}.bias"), &[out_c], &bias);
        let pad = (k as i64 - 1) / 2;
        let attrs = vec![
            ints("kernel_shape", &[k as i64, k as i64]),
            ints("strides", &[stride as i64, stride as i64]),
            ints("pads", &[pad, pad, pad, pad]),
            ints("dilations", &[1, 1]),
            int("group", groups as i64),
        ];
        Ok(self.node("Conv", &[x, &w_name, &b_name], layer, attrs))
    }

    /// A 1x1 convolution with bias on pooled (n, c, 1, 1) features, as the reference's squeeze-excite has.
    fn conv1x1(&mut self, x: &str, n: &DenseNames, layer: &str) -> candle_core::Result<String> {
        let dims = self.params.tensor(&n.weight).dims().to_vec();
        let w = self.initializer(&format!("{layer}.weight"), &dims, &self.params.values(&n.weight)?);
        let b = self.initializer(&format!("{layer}.bias"), &[dims[0]], &self.params.values(&n.bias)?);
        let attrs = vec![ints("kernel_shape", &[1, 1]), int("group", 1)];
        Ok(self.node("Conv", &[x, &w, &b], layer, attrs))
    }

    /// A fully connected layer on flat (n, c) features: the reference's biased 1x1 convolution on the pooled
    /// features, stored as Gemm with the weight (out, in) and transB.
    /// Its output is called `output`.
    fn dense(&mut self, x: &str, n: &DenseNames, layer: &str, output: &str) -> candle_core::Result<String> {
        let dims = self.params.tensor(&n.weight).dims().to_vec();
        let w = self.initializer(&format!("{layer}.weight"), &dims[..2], &self.params.values(&n.weight)?);
        let b = self.initializer(&format!("{layer}.bias"), &[dims[0]], &self.params.values(&n.bias)?);
        Ok(self.node_to("Gemm", &[x, &w, &b], layer, output, vec![int("transB", 1)]))
    }

    /// Squeeze-and-excite: pool, reduce + ReLU, expand + hard-sigmoid (relu6(x + 3) / 6), scale the input.
    fn squeeze_excite(
        &mut self,
        x: &str,
        reduce: &DenseNames,
        expand: &DenseNames,
        layer: &str,
    ) -> candle_core::Result<String> {
        let pooled = self.node("GlobalAveragePool", &[x], &format!("{layer}.pool"), Vec::new());
        let r = self.conv1x1(&pooled, reduce, &format!("{layer}.conv_0.1"))?;
        let r = self.node("Relu", &[&r], &format!("{layer}.relu"), Vec::new());
        let e = self.conv1x1(&r, expand, &format!("{layer}.conv_1.0"))?;
        let gate = self.node(
            "HardSigmoid",
            &[&e],
            &format!("{layer}.hard_sigmoid"),
            vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
        );
        Ok(self.node("Mul", &[x, &gate], &format!("{layer}.scale"), Vec::new()))
    }

    fn activation(&mut self, x: &str, act: Activation, layer: &str) -> String {
        match act {
            Activation::Relu => self.node("Relu", &[x], &format!("{layer}.relu"), Vec::new()),
            Activation::HardSwish => self.node("HardSwish", &[x], &format!("{layer}.hard_swish"), Vec::new()),
        }
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(f),
        ..Default::default()
    }
}

/// One dimension of a graph input or output.
enum Dim {
    /// The batch: symbolic, so that one file runs any number of images.
    Batch,
    Fixed(i64),
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => DimensionValue::DimParam("batch".into()),
                Dim::Fixed(v) => DimensionValue::DimValue(*v),
            }),
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: Some(FLOAT), shape: Some(TensorShapeProto { dim }) }),
        }),
        doc_string: None,
    }
}

#[cfg(test)]
mod tests;
