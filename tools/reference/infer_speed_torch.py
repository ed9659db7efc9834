"""PyTorch eager inference at any input size, timed the way `mobilenetv3 latency` times the engine: the model file
loaded with strict=True, laid out with --si, evaluation mode under torch.inference_mode(), random input; for each
batch size, --warmup untimed calls then the median of --runs timed ones. Prints one JSON line per batch size,
the figures to set beside

    mobilenetv3 latency --variants V --si S --size N --batch 1,32

run in the same session with nothing else running. Usage:
    infer_speed_torch.py MODEL.safetensors --size N [--si S] [--batch 1,32] [--runs R] [--warmup W] [--threads T]
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
p.add_argument("--batch", default="1,32", help="comma-separated batch sizes")
p.add_argument("--runs", type=int, default=100)
p.add_argument("--warmup", type=int, default=10)
p.add_argument("--threads", type=int, help="intra-op threads (default: PyTorch's)")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)

model, meta = load_model_file(a.model, a.si)
si = meta["si"]
model.eval()
for batch in (int(b) for b in a.batch.split(",")):
    x = torch.randn(batch, 3, a.size, a.size)
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.runs):
            t = time.perf_counter()
            model(x)
            if i >= a.warmup:
                times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "engine": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "variant": f"{meta['variant']}_{meta['width']}", "si": si, "size": a.size, "batch": batch,
        "runs": a.runs, "median_ms": round(median * 1e3, 3), "img_per_s": round(batch / median, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }), flush=True)
