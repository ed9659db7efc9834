//! Our CUDA kernels against our CPU kernels, through the graph's ops and candle's autograd, on every layer
//! geometry of the architecture tables (both networks, widths 0.25 / 0.5 / 1.0, initial stride 1 and 2).
//! Each test skips with a line saying why where CUDA does not open (`cargo test --features cuda` on a machine
//! without a GPU); `.ci/gpu-check.sh` runs them on one.
//!
//! Tolerance: max |cuda - cpu| <= 1e-4 * max |cpu| + 1e-5 per tensor (the two sum in different orders;
//! reductions over a batch's 10^5 elements keep double partial sums on both sides).

use crate::exec::graph::ops::{self, Ops};
use crate::kernels::Act;
use crate::model::arch::{ModelConfig, Variant, INPUT_SIZE};
use crate::train::optim::{Sgd, SgdConfig};
use candle_core::{Device, Tensor, Var};
use std::collections::BTreeSet;

fn cuda() -> Option<Device> {
    match crate::device::cuda() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// A depthwise layer: (channels, input side, filter side, stride).
type DepthwiseLayer = (usize, usize, usize, usize);
/// A BatchNorm: (channels, side).
type NormLayer = (usize, usize);

/// Every depthwise layer and every BatchNorm over the variants the zoo ships and both initial strides.
fn geometries() -> (BTreeSet<DepthwiseLayer>, BTreeSet<NormLayer>) {
    let (mut dw, mut bn) = (BTreeSet::new(), BTreeSet::new());
    for variant in [Variant::Small, Variant::Large] {
        for width in [0.25, 0.5, 1.0] {
            for si in [1, 2] {
                let spec = ModelConfig::new(variant, width).with_initial_stride(si).spec();
                let mut side = INPUT_SIZE.div_ceil(spec.initial_stride);
                bn.insert((spec.stem_out, side));
                for b in &spec.blocks {
                    let out = (side + 2 * b.padding() - b.kernel) / b.stride + 1;
                    dw.insert((b.expanded, side, b.kernel, b.stride));
                    bn.insert((b.expanded, side));
                    bn.insert((b.expanded, out));
                    bn.insert((b.out_c, out));
                    side = out;
                }
                bn.insert((spec.last_out, side));
            }
        }
    }
    (dw, bn)
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Asserts `got` (any device) matches `want` (CPU) within the module's tolerance.
fn close(what: &str, got: &Tensor, want: &Tensor) {
    let got = got.to_device(&Device::Cpu).unwrap();
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let d = max_abs(&(got - want).unwrap());
    let tol = 1e-4 * max_abs(want) + 1e-5;
    assert!(d <= tol, "{what}: CUDA differs from the CPU kernel by {d} (tolerance {tol})");
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic per seed, on the CPU (the reference side), then copied where needed.
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The depthwise convolution's output and both gradients (of sum(y * r)) on `dev`.
fn depthwise_on(dev: &Device, x: &Tensor, w: &Tensor, r: &Tensor, stride: usize, pad: usize) -> [Tensor; 3] {
    let xv = Var::from_tensor(&x.to_device(dev).unwrap()).unwrap();
    let wv = Var::from_tensor(&w.to_device(dev).unwrap()).unwrap();
    let y = ops::depthwise_conv2d(xv.as_tensor(), wv.as_tensor(), stride, pad, Ops::Fused).unwrap();
    let loss = (&y * r.to_device(dev).unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    [y, g.get(xv.as_tensor()).unwrap().clone(), g.get(wv.as_tensor()).unwrap().clone()]
}

#[test]
fn depthwise_forward_and_gradients_match_the_cpu_kernels_on_every_layer_geometry() {
    let Some(gpu) = cuda() else { return };
    let (geos, _) = geometries();
    let n = 4;
    for (i, &(c, side, k, stride)) in geos.iter().enumerate() {
        let pad = k / 2;
        let out = (side + 2 * pad - k) / stride + 1;
        let x = randn(&[n, c, side, side], 3 * i as u64 + 1);
        let w = randn(&[c, 1, k, k], 3 * i as u64 + 2);
        let r = randn(&[n, c, out, out], 3 * i as u64 + 3);
        let want = depthwise_on(&Device::Cpu, &x, &w, &r, stride, pad);
        let got = depthwise_on(&gpu, &x, &w, &r, stride, pad);
        let what = format!("depthwise c={c} {side}x{side} k={k} stride={stride}");
        close(&format!("{what}: output"), &got[0], &want[0]);
        close(&format!("{what}: input gradient"), &got[1], &want[1]);
        close(&format!("{what}: filter gradient"), &got[2], &want[2]);
    }
}

/// Training BatchNorm + activation: output, batch mean and variance, and the gradients of x, gamma, beta.
fn batch_norm_on(dev: &Device, x: &Tensor, gamma: &Tensor, beta: &Tensor, r: &Tensor, act: Act) -> [Tensor; 6] {
    let xv = Var::from_tensor(&x.to_device(dev).unwrap()).unwrap();
    let gv = Var::from_tensor(&gamma.to_device(dev).unwrap()).unwrap();
    let bv = Var::from_tensor(&beta.to_device(dev).unwrap()).unwrap();
    let (y, mean, var) =
        ops::batch_norm_act_train(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), act, 1e-5, Ops::Fused).unwrap();
    let loss = (&y * r.to_device(dev).unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let grad = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
    [y, mean, var, grad(&xv), grad(&gv), grad(&bv)]
}

#[test]
fn batch_norm_statistics_output_and_gradients_match_the_cpu_kernels_on_every_layer_geometry() {
    let Some(gpu) = cuda() else { return };
    let (_, geos) = geometries();
    let n = 4;
    let names = ["output", "batch mean", "batch variance", "input gradient", "gamma gradient", "beta gradient"];
    for (i, &(c, side)) in geos.iter().enumerate() {
        for (j, act) in [Act::None, Act::Relu, Act::HardSwish].into_iter().enumerate() {
            let seed = 10 * (3 * i + j) as u64;
            // An offset mean and a spread unlike 1, as real activations have.
            let x = ((randn(&[n, c, side, side], seed + 1) * 2.5).unwrap() + 0.7).unwrap();
            let gamma = (randn(&[c], seed + 2) + 1.0).unwrap();
            let beta = randn(&[c], seed + 3);
            let r = randn(&[n, c, side, side], seed + 4);
            let want = batch_norm_on(&Device::Cpu, &x, &gamma, &beta, &r, act);
            let got = batch_norm_on(&gpu, &x, &gamma, &beta, &r, act);
            for ((name, g), w) in names.iter().zip(&got).zip(&want) {
                close(&format!("batch norm c={c} {side}x{side} {act:?}: {name}"), g, w);
            }
        }
    }
}

#[test]
fn evaluation_batch_norm_matches_the_cpu_kernel() {
    let Some(gpu) = cuda() else { return };
    let (_, geos) = geometries();
    for (i, &(c, side)) in geos.iter().enumerate() {
        let x = randn(&[2, c, side, side], 7 * i as u64 + 1);
        let (scale, shift) = (randn(&[c], 7 * i as u64 + 2), randn(&[c], 7 * i as u64 + 3));
        for act in [Act::None, Act::Relu, Act::HardSwish] {
            let want = ops::affine_act(&x, &scale, &shift, act, Ops::Fused).unwrap();
            let on_gpu = |t: &Tensor| t.to_device(&gpu).unwrap();
            let got = ops::affine_act(&on_gpu(&x), &on_gpu(&scale), &on_gpu(&shift), act, Ops::Fused).unwrap();
            close(&format!("affine act c={c} {side}x{side} {act:?}"), &got, &want);
        }
    }
}

#[test]
fn in_place_sgd_on_cuda_matches_the_cpu_update() {
    let Some(gpu) = cuda() else { return };
    for (momentum, weight_decay, nesterov) in [(0.9, 0.0, false), (0.9, 5e-4, false), (0.9, 1e-4, true)] {
        let config = SgdConfig { lr: 0.1, momentum, weight_decay, nesterov };
        let run = |dev: &Device| {
            let p = Var::from_tensor(&randn(&[3, 1000], 1).to_device(dev).unwrap()).unwrap();
            let mut opt = Sgd::new(vec![("p".into(), p.clone())], config.clone());
            opt.use_cuda_kernels(true);
            for step in 0..4 {
                let target = randn(&[3, 1000], 10 + step).to_device(dev).unwrap();
                let loss = (p.as_tensor() - target).unwrap().sqr().unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
            p.as_tensor().clone()
        };
        close(&format!("SGD {config:?}"), &run(&gpu), &run(&Device::Cpu));
    }
}
