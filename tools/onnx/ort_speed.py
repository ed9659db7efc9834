#!/usr/bin/env python3
"""Times ONNX Runtime on exported models, the way `mobilenetv3 latency` times the engine.

Usage: ort_speed.py [--threads 2] [--runs 300] [--warmup 30] [--big-batch 128] MODEL.onnx...

For each file: a CPU session (intra-op threads as given, sequential execution, every graph optimisation on),
random input of the file's own input size; batch 1: the median of --runs timed calls after --warmup untimed
ones; batch 128 (or --big-batch): the median time of a batch over at least 8 calls and 3 seconds, as images
per second.
Prints one line per file and, last, `ORT_SPEED {json}`.
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--big-batch", type=int, default=128, help="the batch timed for throughput")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = {}
    for path in args.files:
        s = session(path, args.threads)
        inp = s.get_inputs()[0]
        size = inp.shape[2]
        x1 = rng.standard_normal((1, 3, size, size), dtype=np.float32)
        run1 = lambda: s.run(None, {inp.name: x1})
        for _ in range(args.warmup):
            run1()
        b1_ms = float(np.median([timed(run1) for _ in range(args.runs)]) * 1e3)
        big = args.big_batch
        x128 = rng.standard_normal((big, 3, size, size), dtype=np.float32)
        run128 = lambda: s.run(None, {inp.name: x128})
        for _ in range(2):
            run128()
        ts, start = [], time.perf_counter()
        while len(ts) < 8 or time.perf_counter() - start < 3.0:
            ts.append(timed(run128))
        b128 = big / float(np.median(ts))
        name = os.path.basename(path)
        print(f"ORT {ort.__version__} {name} at {size} px: batch 1 {b1_ms:.3f} ms (median of {args.runs}), "
              f"batch {big} {b128:.0f} img/s", flush=True)
        results[name] = {"size": size, "b1_ms": b1_ms, "big_batch": big, "big_batch_img_s": b128}
    print("ORT_SPEED " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
