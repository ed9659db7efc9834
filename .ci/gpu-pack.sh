#!/usr/bin/env bash
# Packs the cuda build of .ci/cuda-check.sh for a GPU machine without a Rust toolchain (the device tool carries
# at most 64 MiB): the stripped binaries in target/cuda.tar.xz, which .ci/gpu-check.sh unpacks there.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=target/cuda-pack
rm -rf "$tmp" && mkdir -p "$tmp/cuda/release" "$tmp/cuda/tests"
cp target/cuda/manifest-dir "$tmp/cuda/"
strip -o "$tmp/cuda/release/mobilenetv3" target/cuda/release/mobilenetv3
for t in target/cuda/tests/*; do strip -o "$tmp/cuda/tests/$(basename "$t")" "$t"; done
"$tmp/cuda/release/mobilenetv3" --version
# xz -9e: its 64 MiB window sees the CUDA kernels (PTX) that each of the three binaries holds as one copy
# (38 MB instead of 46 MB at the default level; about three minutes on one core).
# Written aside and renamed, so that an interrupted pack leaves no truncated archive for gpu-check.sh.
tar -cf - -C "$tmp" cuda | xz -9e -T1 >target/cuda.tar.xz.tmp
mv target/cuda.tar.xz.tmp target/cuda.tar.xz
ls -l target/cuda.tar.xz
