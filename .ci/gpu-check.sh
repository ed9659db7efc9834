#!/usr/bin/env bash
# The CUDA checks, on a machine with an NVIDIA GPU (issue #15); run it there before anything else. Prints one
# table at the end and leaves the logs and JSON in $1 (default target/gpu-check). Where there is no GPU it says
# so and exits 0.
#
# The binaries come from `.ci/cuda-check.sh` (target/cuda/: the app and the test binaries of the cuda build,
# linked to start without the NVIDIA libraries and open them at run time). Where cargo is present they are
# built here first; a GPU machine without a Rust toolchain gets them carried, packed by `.ci/gpu-pack.sh` into
# target/cuda.tar.xz.
#
# Steps: the CUDA kernel tests and the parity tests (PyTorch fixtures, both op sets, CPU and CUDA); `latency`
# for all six variants on cpu and cuda at batch 1 and 128; `bench train` on cuda for all six, with candle's
# stock ops (portable, today's CUDA default) and with our kernels (graph). Sized to finish in a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/gpu-check}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check skipped: no NVIDIA GPU on this machine (nvidia-smi finds none)"
  exit 0
fi
mkdir -p "$out"
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
echo "GPU: $gpu"

if command -v cargo >/dev/null 2>&1; then
  bash .ci/cuda-check.sh
elif [ -f target/cuda.tar.xz ] && [ ! -x target/cuda/release/mobilenetv3 ]; then
  tar -xJf target/cuda.tar.xz -C target
fi
bin=target/cuda/release/mobilenetv3
if [ ! -x "$bin" ]; then
  echo "no cuda build at $bin: run .ci/cuda-check.sh (and .ci/gpu-pack.sh) where cargo is, and bring target/cuda.tar.xz"
  exit 1
fi

# The driver's libcuda comes from the system (or a container's /usr/local/nvidia); cuBLAS, cuRAND and NVRTC
# from a CUDA toolkit or Python's nvidia wheels (PyTorch's), whichever is here.
nvidia_library_dirs() {
  python3 - <<'PY'
import glob, os
found = set()
for pattern in ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/local/cuda/lib64",
                "/usr/local/cuda/targets/*/lib", "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib",
                "/usr/lib/python3*/site-packages/nvidia/*/lib", "/usr/local/lib/python3*/dist-packages/nvidia/*/lib"):
    for d in glob.glob(pattern):
        names = ("libcuda.so.*", "libcublas.so.*", "libcurand.so.*", "libnvrtc.so.*")
        if any(glob.glob(os.path.join(d, n)) for n in names):
            found.add(d)
try:
    import nvidia
    for p in nvidia.__path__:
        found.update(glob.glob(os.path.join(p, "*", "lib")))
except ImportError:
    pass
print(":".join(sorted(found)))
PY
}
dirs=$(nvidia_library_dirs 2>/dev/null || true)
export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "NVIDIA libraries from: ${dirs:-the default library paths}"

# The test binaries read the fixtures from the folder they were built in.
built_in=$(cat target/cuda/manifest-dir)
if [ "$built_in" != "$PWD" ] && [ ! -e "$built_in" ]; then
  mkdir -p "$(dirname "$built_in")" && ln -s "$PWD" "$built_in"
fi

status=0
echo "== CUDA kernel tests (against the CPU kernels) and parity tests (against PyTorch), CPU and CUDA"
for t in target/cuda/tests/*; do
  name=$(basename "$t")
  case "$name" in
    mobilenetv3-*) filter=cuda ;;
    *) filter= ;;
  esac
  if "$t" $filter --nocapture 2>&1 | tee "$out/$name.log"; then :; else status=1; fi
  if grep -q "skipped" "$out/$name.log"; then
    echo "CUDA tests skipped on a machine with a GPU: CUDA did not open"; status=1
  fi
done

echo "== latency: every variant, cpu and cuda, batch 1 and 128"
"$bin" latency --variants all --devices cpu,cuda --batch 1,128 --runs 30 --warmup 5 --json "$out/latency.json" \
  2>&1 | tee "$out/latency.log" || status=1

echo "== bench train on cuda: candle's stock ops (portable) and our kernels (graph)"
: >"$out/train.jsonl"
for v in small_0.25 small_0.5 small_1.0 large_0.25 large_0.5 large_1.0; do
  for engine in portable graph; do
    if "$bin" bench train --variant "$v" --device cuda --engine "$engine" --steps 5 --warmup 2 --json \
      >>"$out/train.jsonl" 2>>"$out/train.log"; then :; else
      echo "bench train $v $engine failed (see $out/train.log)"; status=1
    fi
  done
done

python3 - "$out" "$gpu" <<'PY'
import json, sys, os
out, gpu = sys.argv[1], sys.argv[2]
print(f"\nGPU: {gpu}")
lat = json.load(open(os.path.join(out, "latency.json"))) if os.path.exists(os.path.join(out, "latency.json")) else []
rows = {}
for r in lat:
    rows.setdefault(r["variant"], {})[(r["device"], r["batch"])] = r["median_ms"]
train = {}
for line in open(os.path.join(out, "train.jsonl")):
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        train[(r["variant"], r["engine"].lower())] = r["median_step_ms"]
def f(v):
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"
print("| variant | cpu b1 ms | cuda b1 ms | cpu b128 ms | cuda b128 ms | train b128 cuda portable ms | train b128 cuda graph ms |")
print("|---|---|---|---|---|---|---|")
for v in ["small_0.25", "small_0.5", "small_1.0", "large_0.25", "large_0.5", "large_1.0"]:
    r = rows.get(v, {})
    print(f"| {v} | {f(r.get(('cpu', 1)))} | {f(r.get(('cuda', 1)))} | {f(r.get(('cpu', 128)))} | "
          f"{f(r.get(('cuda', 128)))} | {f(train.get((v, 'portable')))} | {f(train.get((v, 'graph')))} |")
PY
[ "$status" = 0 ] && echo "gpu-check passed" || echo "gpu-check FAILED (see $out)"
exit "$status"
