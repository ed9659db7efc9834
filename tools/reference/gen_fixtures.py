"""Writes the parity fixtures under tests/fixtures/ (run with tools/reference/setup.sh's venv).

For each case: `<case>.weights.safetensors` (a plain PyTorch state_dict, exactly what a user's file holds) and
`<case>.io.safetensors` (inputs and the outputs PyTorch computes for them, in float64 so the reference itself adds
no rounding error). The train case also holds train-mode logits, the loss, every parameter gradient and the
BatchNorm running statistics after the step. `small_0.25.pth` is the same weights as a torch.save() zip file.

A case that takes another case's weights (the photo-size cases) writes only its io file, computed with the weights
read back from that case's weights file; its io metadata names them and records the search for an input clear
of the kinks (see KINK_MARGIN). `--only NAME[,NAME]` writes just those cases and updates their summary entries.
"""
import argparse
import copy
import json
import os
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mbv3_ref import HSigmoid, HSwish, MobileNetV3, used_param_count

# A train-mode input is only used if no activation input lies this close to a kink of its activation (0 for
# ReLU, -3 and 3 for the hard ones). Closer than float32's rounding, the derivative there depends on the last
# bit of the implementation's arithmetic (e.g. whether it uses fused multiply-adds), not on its correctness.
KINK_MARGIN = 1e-6
# Inputs tried per case. At photo sizes there are millions of activation inputs and none of these inputs may clear
# KINK_MARGIN: the case then takes the one farthest from the kinks, and its io metadata says how far that is.
KINK_TRIES = 30


def kink_distance(model, x):
    """The smallest distance of any activation input to its activation's kink, in a train-mode forward of a copy."""
    probe = copy.deepcopy(model)
    probe.train()
    closest = [float("inf")]

    def hook(module, inputs, _output):
        v = inputs[0].detach()
        d = v.abs() if isinstance(module, torch.nn.ReLU) else torch.minimum((v + 3).abs(), (v - 3).abs())
        closest[0] = min(closest[0], float(d.min()))

    for m in probe.modules():
        if isinstance(m, (torch.nn.ReLU, HSwish, HSigmoid)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        probe(x)
    return closest[0]

class Case(NamedTuple):
    name: str
    variant: str
    width: float
    si: int
    size: int  # input side in pixels
    train: bool  # with train-mode data
    batch: int = 4
    weights_from: Optional[str] = None  # an earlier case whose weights file this case uses (no file of its own)


CASES = [
    Case("small_0.25_si1", "small", 0.25, 1, 32, True),
    Case("small_0.75_si2", "small", 0.75, 2, 64, False),
    Case("large_0.25_si1", "large", 0.25, 1, 32, True),
    Case("large_0.35_si2", "large", 0.35, 2, 64, False),
    # Appended last so the cases above keep their seeds: the stride-2 backward paths against PyTorch.
    Case("small_0.25_si2", "small", 0.25, 2, 64, True),
    # The same networks at the input sizes a folder of photos trains at.
    Case("small_0.25_si2_96", "small", 0.25, 2, 96, True, batch=4, weights_from="small_0.25_si2"),
    Case("small_0.25_si2_224", "small", 0.25, 2, 224, True, batch=2, weights_from="small_0.25_si2"),
    Case("large_0.25_si1_64", "large", 0.25, 1, 64, True, batch=4, weights_from="large_0.25_si1"),
    Case("large_0.35_si2_224", "large", 0.35, 2, 224, True, batch=2, weights_from="large_0.35_si2"),
]


def realistic_init(model, seed, size):
    """Random weights whose BatchNorm statistics are non-trivial but keep activations in a sane range."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the warm-up batches
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, size, size, generator=g))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.1
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.2, generator=g)
                m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.05)
                m.num_batches_tracked.fill_(7)
        # Keep logits around unit scale, so that an absolute tolerance on them means something.
        model.eval()
        peak = model(torch.randn(8, 3, size, size, generator=g)).abs().max()
        model.conv_4.weight.mul_(3.0 / peak)
        model.conv_4.bias.mul_(3.0 / peak)


def pick_input(ref, case, i):
    """The input (and its generator, to draw the labels from next) of the first of KINK_TRIES seeds whose train-mode
    activation inputs all keep KINK_MARGIN clear of the kinks, or else of the seed that keeps farthest from them.
    Also returns that distance (inf for an eval-only case, which needs no search) and the number of seeds tried."""

    def draw(attempt):
        g = torch.Generator().manual_seed(2000 + i + 1000 * attempt)
        return torch.randn(case.batch, 3, case.size, case.size, generator=g), g

    if not case.train:
        return (*draw(0), float("inf"), 0)
    best_attempt, best_distance = 0, -1.0
    for attempt in range(KINK_TRIES):
        distance = kink_distance(ref, draw(attempt)[0].double())
        if distance > best_distance:
            best_attempt, best_distance = attempt, distance
        if distance > KINK_MARGIN:
            break
    return (*draw(best_attempt), best_distance, attempt + 1)


def load_case_weights(model, case, out):
    """Loads the weights file of case.weights_from into model (strict), after checking it is this network."""
    path = os.path.join(out, f"{case.weights_from}.weights.safetensors")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    expected = {"variant": case.variant, "width": str(case.width), "si": str(case.si)}
    if meta != expected:
        raise SystemExit(f"{case.name}: {path} holds {meta}, not {expected}")
    model.load_state_dict(load_file(path), strict=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))
    ap.add_argument("--only", help="comma-separated case names: write only these (the other files stay as they are)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    names = [c.name for c in CASES]
    only = args.only.split(",") if args.only else names
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; the cases are {names}")
    summary_path = os.path.join(args.out, "summary.json")
    summary = {}
    if args.only and os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    # A case's seeds come from its place in CASES, whichever cases run.
    for i, case in enumerate(CASES):
        if case.name not in only:
            continue
        name, variant, wm, si, size, train = case[:6]
        torch.manual_seed(100 + i)
        model = MobileNetV3(variant, wm, si)
        if case.weights_from:
            load_case_weights(model, case, args.out)
        else:
            realistic_init(model, 1000 + i, size)
            sd = {k: v.contiguous() for k, v in model.state_dict().items()}
            meta = {"variant": variant, "width": str(wm), "si": str(si)}
            save_file(sd, os.path.join(args.out, f"{name}.weights.safetensors"), metadata=meta)
        if name == "small_0.25_si1":
            torch.save(model.state_dict(), os.path.join(args.out, "small_0.25.pth"))

        ref = MobileNetV3(variant, wm, si).double()
        ref.load_state_dict(model.state_dict())
        if train:
            ref.conv_3[3].p = 0.0  # dropout off: train mode is then deterministic
        x, g, distance, tries = pick_input(ref, case, i)
        # Up to 64 pixels an input clear of the kinks exists; only a photo-size case settles for the farthest one.
        if train and distance <= KINK_MARGIN and not case.weights_from:
            raise SystemExit(f"{name}: no input clear of the kinks in {tries} tries")
        io = {"input": x}
        ref.eval()
        with torch.no_grad():
            io["logits_eval"] = ref(x.double()).float()
        if train:
            ref.train()
            labels = torch.randint(0, 100, (case.batch,), generator=g)
            logits = ref(x.double())
            loss = F.cross_entropy(logits, labels)
            loss.backward()
            io["labels"] = labels.to(torch.int64)
            io["logits_train"] = logits.detach().float()
            io["loss_train"] = loss.detach().float().reshape(1)
            for k, p in ref.named_parameters():
                if p.grad is not None:
                    io[f"grad.{k}"] = p.grad.float().contiguous()
            for k, b in ref.named_buffers():
                if "running" in k:
                    io[f"after.{k}"] = b.float().contiguous()
        # The first cases' io files carry no metadata (and so stay byte for byte as committed).
        io_meta = None
        if case.weights_from:
            io_meta = {"weights": f"{case.weights_from}.weights.safetensors", "kink_distance": repr(distance),
                       "kink_tries": str(tries), "kink_margin": repr(KINK_MARGIN)}
        save_file(io, os.path.join(args.out, f"{name}.io.safetensors"), metadata=io_meta)
        summary[name] = {
            "used_params": used_param_count(model),
            "logits_abs_max": float(io["logits_eval"].abs().max()),
        }
        kinks = f"kink distance {distance:.3g} after {tries} tries (margin {KINK_MARGIN:g})" if train else ""
        print(name, summary[name], kinks)
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
