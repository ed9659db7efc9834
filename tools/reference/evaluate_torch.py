"""Evaluates a weight file written by the Rust engine in PyTorch, on the CIFAR-100 test split (binary layout):
loads it into the reference with load_state_dict(strict=True) and prints top-1 / top-5, to compare with
`mobilenetv3 evaluate`. Usage: evaluate_torch.py MODEL.safetensors [DATA_DIR]"""
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mbv3_ref import MobileNetV3

MEAN = np.array([0.5071, 0.4865, 0.4409], dtype=np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2673, 0.2564, 0.2762], dtype=np.float32).reshape(1, 3, 1, 1)

path = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "../../../shared/data/cifar-100-binary")
with safe_open(path, "pt") as f:
    meta = f.metadata()
model = MobileNetV3(meta["variant"], float(meta["width"]), int(meta["si"]))
model.load_state_dict(load_file(path), strict=True)
model.eval()
raw = np.fromfile(os.path.join(data, "test.bin"), dtype=np.uint8).reshape(-1, 3074)
labels = torch.from_numpy(raw[:, 1].astype(np.int64))
images = torch.from_numpy(((raw[:, 2:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0) - MEAN) / STD)
torch.set_num_threads(2)
top1 = top5 = 0
with torch.no_grad():
    for i in range(0, len(labels), 500):
        logits = model(images[i:i + 500])
        t5 = logits.topk(5, dim=1).indices
        y = labels[i:i + 500]
        top1 += (t5[:, 0] == y).sum().item()
        top5 += (t5 == y[:, None]).any(dim=1).sum().item()
n = len(labels)
print(f"{path} in PyTorch (strict load): top-1 {100 * top1 / n:.2f}%  top-5 {100 * top5 / n:.2f}% on {n} test images")
