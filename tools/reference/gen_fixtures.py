"""Writes the parity fixtures under tests/fixtures/ (run with tools/reference/setup.sh's venv).

For each case: `<case>.weights.safetensors` (a plain PyTorch state_dict, exactly what a user's file holds) and
`<case>.io.safetensors` (inputs and the outputs PyTorch computes for them, in float64 so the reference itself adds
no rounding error). The train case also holds train-mode logits, the loss, every parameter gradient and the
BatchNorm running statistics after the step. `small_0.25.pth` is the same weights as a torch.save() zip file.
"""
import argparse
import copy
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mbv3_ref import HSigmoid, HSwish, MobileNetV3, used_param_count

# A train-mode input is only used if no activation input lies this close to a kink of its activation (0 for
# ReLU, -3 and 3 for the hard ones). Closer than float32's rounding, the derivative there depends on the last
# bit of the implementation's arithmetic (e.g. whether it uses fused multiply-adds), not on its correctness.
KINK_MARGIN = 1e-6


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

CASES = [
    # name, variant, width, si, input size, with train-mode data
    ("small_0.25_si1", "small", 0.25, 1, 32, True),
    ("small_0.75_si2", "small", 0.75, 2, 64, False),
    ("large_0.25_si1", "large", 0.25, 1, 32, True),
    ("large_0.35_si2", "large", 0.35, 2, 64, False),
    # Appended last so the cases above keep their seeds: the stride-2 backward paths against PyTorch.
    ("small_0.25_si2", "small", 0.25, 2, 64, True),
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for i, (name, variant, wm, si, size, train) in enumerate(CASES):
        torch.manual_seed(100 + i)
        model = MobileNetV3(variant, wm, si)
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
        # The first input seed that keeps clear of the activations' kinks (see KINK_MARGIN).
        for attempt in range(100):
            g = torch.Generator().manual_seed(2000 + i + 1000 * attempt)
            x = torch.randn(4, 3, size, size, generator=g)
            if not train or kink_distance(ref, x.double()) > KINK_MARGIN:
                break
        else:
            raise SystemExit(f"{name}: no input clear of the kinks in 100 tries")
        io = {"input": x}
        ref.eval()
        with torch.no_grad():
            io["logits_eval"] = ref(x.double()).float()
        if train:
            ref.train()
            labels = torch.randint(0, 100, (4,), generator=g)
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
        save_file(io, os.path.join(args.out, f"{name}.io.safetensors"))
        summary[name] = {
            "used_params": used_param_count(model),
            "logits_abs_max": float(io["logits_eval"].abs().max()),
        }
        print(name, summary[name])
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
