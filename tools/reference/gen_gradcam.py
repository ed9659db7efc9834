"""Grad-CAM fixtures: the PyTorch reference's Grad-CAM, by autograd, of the shipped models on a sample photo.

Usage (from the project root): tools/reference/.venv/bin/python tools/reference/gen_gradcam.py
Writes tests/fixtures/gradcam_<model>.safetensors for small_0.25, small_1.0, large_0.25 and large_1.0 with
  input      (1, 3, 32, 32) the normalised photo (test_images/rocket.jpg, resized by PIL)
  classes    (2,) int64: the top class and the third most likely
  cam_top, cam_third   (8, 8) the raw maps (before upsampling) for those classes
Grad-CAM (Selvaraju et al. 2017) on conv_2's output A (the last convolutional stage, after its hard-swish):
ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of d logit_c / d A_k, gradients from loss.backward().
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from mbv3_ref import MobileNetV3  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MEAN = np.array([0.5071, 0.4865, 0.4409], dtype=np.float32)
STD = np.array([0.2673, 0.2564, 0.2762], dtype=np.float32)


def photo():
    img = Image.open(ROOT / "test_images" / "rocket.jpg").convert("RGB").resize((32, 32), Image.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy()).unsqueeze(0)


def grad_cam(model, x, cls):
    seen = {}

    def keep(_module, _inputs, out):
        out.retain_grad()
        seen["A"] = out

    handle = model.conv_2.register_forward_hook(keep)
    logits = model(x)
    handle.remove()
    logits[0, cls].backward()
    a = seen["A"]
    alpha = a.grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((alpha * a).sum(dim=1))[0].detach(), logits.detach()


def main():
    x = photo()
    for name in ["small_0.25", "small_1.0", "large_0.25", "large_1.0"]:
        path = ROOT / "trained_models" / f"mobilenetv3_{name}.safetensors"
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        model = MobileNetV3(meta["variant"], float(meta["width"]), int(meta["si"]))
        model.load_state_dict(load_file(str(path)), strict=True)
        model.eval()
        with torch.no_grad():
            order = model(x)[0].argsort(descending=True)
        top, third = int(order[0]), int(order[2])
        cam_top, _ = grad_cam(model, x, top)
        model.zero_grad()
        cam_third, _ = grad_cam(model, x, third)
        out = ROOT / "tests" / "fixtures" / f"gradcam_{name}.safetensors"
        save_file(
            {
                "input": x.contiguous(),
                "classes": torch.tensor([top, third], dtype=torch.int64),
                "cam_top": cam_top.contiguous(),
                "cam_third": cam_third.contiguous(),
            },
            str(out),
            metadata={"source": "tools/reference/gen_gradcam.py", "torch": torch.__version__},
        )
        print(f"{out.name}: classes {top}, {third}; map {tuple(cam_top.shape)}, peak {cam_top.max():.4f}")


if __name__ == "__main__":
    main()
