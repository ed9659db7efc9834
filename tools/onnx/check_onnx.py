#!/usr/bin/env python3
"""Checks ONNX exports of MobileNetV3 Studio with tools that are not ours: onnx.checker and ONNX Runtime.

Usage: check_onnx.py DIR, where each folder in DIR holds
  model.onnx, model_softmax.onnx  the exports (logits; probabilities)
  input.npy                       the engine's normalised input, (n, 3, size, size) float32
  logits.npy                      the engine's logits for it, (n, classes) float32
  class_names.json                the model's class names
(the test `export::tests::onnx_runtime_runs_every_shipped_models_export_like_the_engine` writes them).

Each export must pass onnx.checker (full check, with shape inference), load in ONNX Runtime on the CPU, carry
the class names in its metadata, and give the engine's logits (and their softmax) within 1e-4, at batch n and
at batch 1. Exit status 1 on the first failure.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

TOLERANCE = 1e-4


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    return session, session.run([out.name], {inp.name: x})[0]


def check(case):
    x = np.load(case / "input.npy")
    want = np.load(case / "logits.npy").astype(np.float64)
    names = json.loads((case / "class_names.json").read_text())
    largest = float(np.abs(want).max())
    for file, expected in [("model.onnx", want), ("model_softmax.onnx", None)]:
        path = case / file
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["class_names"]) == names, f"{path}: class names in the metadata differ"
        ops = sorted({n.op_type for n in model.graph.node})
        session, got = run(path, x)
        if expected is None:
            e = np.exp(want - want.max(axis=1, keepdims=True))
            expected = e / e.sum(axis=1, keepdims=True)
        gap = float(np.abs(got.astype(np.float64) - expected).max())
        _, one = run(path, x[:1])
        gap1 = float(np.abs(one.astype(np.float64) - expected[:1]).max())
        ok = gap <= TOLERANCE and gap1 <= TOLERANCE
        print(
            f"{case.name}/{file}: onnx.checker ok, ORT {ort.__version__} batch {len(x)} gap {gap:.2e}, "
            f"batch 1 gap {gap1:.2e} (tolerance {TOLERANCE:.0e}; largest logit {largest:.1f}); ops {', '.join(ops)}"
        )
        if not ok:
            return False
    return True


def main():
    root = Path(sys.argv[1])
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    if not cases:
        print(f"no exports in {root}")
        return 1
    for case in cases:
        if not check(case):
            return 1
    print(f"{len(cases)} models: ONNX Runtime agrees with the engine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
