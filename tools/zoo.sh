#!/usr/bin/env bash
# Trains the model zoo with the reference recipe (SGD lr 0.1, momentum 0.9, no weight decay, MultiStep 15/20/30
# x 0.1, batch 128, 20 epochs, crop + flip, best epoch by validation loss; PyTorch's default initialisation,
# seed $SEED, default 0), one variant after the other, in the order of issue #14. Safe to rerun after any
# interruption: a finished variant is skipped, an interrupted one continues from its resume file (end of its
# last epoch).
#
#   mkdir -p trained_models/runs
#   nohup nice -n 19 bash tools/zoo.sh trained_models/runs/seed0 DATA >> trained_models/runs/seed0.log 2>&1 &
#   SEED=1 nohup nice -n 19 bash tools/zoo.sh trained_models/runs/seed1 DATA large_1.0 >> trained_models/runs/seed1.log 2>&1 &
#
# (A second seed goes to its own OUT, since OUT's names are per variant. An OUT under trained_models/runs/ stays
# out of git and inside the clone, so a run and its resume files live as long as the checkout does; a folder
# beside the clone, such as /tmp, can be gone when the machine is.)
# OUT gets each model, its history and its log (OUT/<name>.log); `mobilenetv3 evaluate --model` and
# tools/reference/evaluate_torch.py then measure it, and the best file of each variant goes to trained_models/.
set -euo pipefail
out=${1:?usage: tools/zoo.sh OUT DATA [VARIANTS...]}
data=${2:?usage: tools/zoo.sh OUT DATA [VARIANTS...]}
shift 2
seed=${SEED:-0}
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(large_1.0 small_1.0 large_0.5 small_0.5 large_0.25 small_0.25)
bin=${MOBILENETV3:-$(dirname "$0")/../target/release/mobilenetv3}
mkdir -p "$out"

# A run killed in its first epoch leaves its history (status "running") and no resume file; `train` then names the
# next run of the variant `<name>_2` (it never takes over another run's files). So a variant's runs in OUT are
# `<name>` and `<name>_N`: it is done when one of them finished, and continues from the newest resume file.
runs_of() { # VARIANT_NAME SUFFIX: OUT's files of every run of that variant with that suffix
  compgen -G "$out/$1$2" || true
  compgen -G "$out/$1_[0-9]*$2" || true
}

for v in "${variants[@]}"; do
  name="mobilenetv3_$v"
  finished=""
  while read -r history; do
    [ -n "$history" ] || continue
    status=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status",""))' "$history" 2>/dev/null || true)
    if [ "$status" = finished ]; then finished=$history; fi
  done < <(runs_of "$name" .history.json)
  if [ -n "$finished" ]; then
    echo "$(date -u +%FT%TZ) $v: finished already ($finished)"
    continue
  fi
  resume=$(runs_of "runs/$name" .resume.safetensors | xargs -r -d '\n' ls -t | head -1)
  if [ -n "$resume" ]; then
    echo "$(date -u +%FT%TZ) $v: continuing from $resume"
    "$bin" train --resume "$resume" --out "$out" --data "$data" >>"$out/$name.log" 2>&1
  else
    echo "$(date -u +%FT%TZ) $v: starting (seed $seed)"
    "$bin" train --model "${v%_*}" --width "${v#*_}" --init torch --seed "$seed" --out "$out" --data "$data" \
      >>"$out/$name.log" 2>&1
  fi
  echo "$(date -u +%FT%TZ) $v: done ($(tail -1 "$out/$name.log"))"
done
