"""Loads a safetensors file written by the Rust engine into the PyTorch reference with strict=True and, given
an io fixture, compares eval logits. Usage: check_load.py MODEL.safetensors [CASE.io.safetensors]"""
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mbv3_ref import MobileNetV3

path = sys.argv[1]
with safe_open(path, "pt") as f:
    meta = f.metadata()
sd = load_file(path)
model = MobileNetV3(meta["variant"], float(meta["width"]), int(meta["si"]), int(meta.get("num_classes", 100)))
model.load_state_dict(sd, strict=True)
model.eval()
print(f"{path}: load_state_dict(strict=True) ok: {meta['variant']} width {meta['width']} si {meta['si']}, "
      f"{len(sd)} tensors")
if len(sys.argv) > 2:
    io = load_file(sys.argv[2])
    with torch.no_grad():
        d = (model(io["input"]) - io["logits_eval"]).abs().max().item()
    print(f"max |logit difference| against the fixture: {d:.2e}")
    sys.exit(0 if d < 1e-4 else 1)
