"""PyTorch eager doing the fine-tuning step that `mobilenetv3 train --from MODEL` does: the model file loaded with
strict=True (its own classes), then full SGD steps (train mode, cross-entropy, backward, momentum update) on
random images of one size. Prints the median step time and images/s, the figure to set beside

    mobilenetv3 bench train --variant V --si S --size N --batch B

run in the same session with nothing else running. Usage:
    finetune_speed_torch.py MODEL.safetensors --size N [--si S] [--batch B] [--steps K] [--warmup W]
"""
import argparse
import json
import resource
import statistics
import time

import torch

from mbv3_ref import load_model_file

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--size", type=int, required=True)
p.add_argument("--si", type=int, help="initial stride (default: the file's)")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--warmup", type=int, default=3)
a = p.parse_args()

model, meta = load_model_file(a.model, a.si)
classes, si = meta["classes"], meta["si"]
model.train()
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(a.batch, 3, a.size, a.size)
y = torch.arange(a.batch) % classes
loss_fn = torch.nn.CrossEntropyLoss()
times = []
for i in range(a.warmup + a.steps):
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    if i >= a.warmup:
        times.append(time.perf_counter() - t)
median = statistics.median(times)
print(json.dumps({
    "engine": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
    "variant": f"{meta['variant']}_{meta['width']}", "si": si, "classes": classes, "size": a.size,
    "batch": a.batch, "steps": a.steps, "median_step_ms": round(median * 1e3, 2),
    "img_per_s": round(a.batch / median, 2),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
}))
