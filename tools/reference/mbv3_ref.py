"""PyTorch reference of MobileNetV3 (small / large) whose state_dict names match the Rust engine's weight files.

This is the network the Rust crate must reproduce to the number. It is used only to write test fixtures and to
check that files written by the Rust engine load back into PyTorch (`load_state_dict(strict=True)`).

Module tree (and so tensor names):
  conv_0          Sequential(Conv 3->c0 k3 stride si, BN, HSwish)
  bottlenecks_1.i Bottleneck: pointwise_0 (Conv1x1, BN, act), depthwise_1 (ConvKxK groups=exp, BN, act),
                  se_block (conv_0 = (pool, Conv1x1+bias), ReLU, conv_1 = (Conv1x1+bias, HSigmoid)),
                  pointwise_2 (Conv1x1, BN)
  conv_2          Sequential(Conv1x1, BN, HSwish)
  conv_3          Sequential(pool, Conv1x1+bias (hidden, not width-scaled), HSwish, Dropout)
  conv_4          Conv1x1 hidden -> classes (+bias)
Every bottleneck owns an SE block, as the original code does; it is applied only where the table says SE.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class HSwish(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class HSigmoid(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


def act(name):
    return nn.ReLU() if name == "RE" else HSwish()


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_0 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1, bias=True), nn.ReLU())
        self.conv_1 = nn.Sequential(nn.Conv2d(c // 4, c, 1, bias=True), HSigmoid())

    def forward(self, x):
        return x * self.conv_1(self.conv_0(x))


class Bottleneck(nn.Module):
    def __init__(self, nin, nout, k, exp, se, a, stride, wm):
        super().__init__()
        nin, nout, exp = int(nin * wm), int(nout * wm), int(exp * wm)
        self.use_se = se
        self.use_res = stride == 1 and nin == nout
        self.pointwise_0 = nn.Sequential(nn.Conv2d(nin, exp, 1, bias=False), nn.BatchNorm2d(exp), act(a))
        self.depthwise_1 = nn.Sequential(
            nn.Conv2d(exp, exp, k, stride=stride, padding=(k - 1) // 2, groups=exp, bias=False),
            nn.BatchNorm2d(exp), act(a))
        self.se_block = SqueezeExcite(exp)
        self.pointwise_2 = nn.Sequential(nn.Conv2d(exp, nout, 1, bias=False), nn.BatchNorm2d(nout))

    def forward(self, x):
        y = self.depthwise_1(self.pointwise_0(x))
        if self.use_se:
            y = self.se_block(y)
        y = self.pointwise_2(y)
        return x + y if self.use_res else y


# (in, out, k, exp, se, act, stride); "si" marks the CIFAR-adjustable initial strides
LARGE = [(16, 16, 3, 16, 0, "RE", 1), (16, 24, 3, 64, 0, "RE", "si"), (24, 24, 3, 72, 0, "RE", 1),
         (24, 40, 5, 72, 1, "RE", "si"), (40, 40, 5, 120, 1, "RE", 1), (40, 40, 5, 120, 1, "RE", 1),
         (40, 80, 3, 240, 0, "HS", 2), (80, 80, 3, 200, 0, "HS", 1), (80, 80, 3, 184, 0, "HS", 1),
         (80, 80, 3, 184, 0, "HS", 1), (80, 112, 3, 480, 1, "HS", 1), (112, 112, 3, 672, 1, "HS", 1),
         (112, 160, 5, 672, 1, "HS", 2), (160, 160, 5, 960, 1, "HS", 1), (160, 160, 5, 960, 1, "HS", 1)]
SMALL = [(16, 16, 3, 16, 1, "RE", "si"), (16, 24, 3, 72, 0, "RE", "si"), (24, 24, 3, 88, 0, "RE", 1),
         (24, 40, 5, 96, 1, "HS", 2), (40, 40, 5, 240, 1, "HS", 1), (40, 40, 5, 240, 1, "HS", 1),
         (40, 48, 5, 120, 1, "HS", 1), (48, 48, 5, 144, 1, "HS", 1), (48, 96, 5, 288, 1, "HS", 2),
         (96, 96, 5, 576, 1, "HS", 1), (96, 96, 5, 576, 1, "HS", 1)]


class MobileNetV3(nn.Module):
    def __init__(self, variant="small", wm=1.0, si=1, num_classes=100, dropout=0.2):
        super().__init__()
        table, last_in, last_out, hidden = (SMALL, 96, 576, 1024) if variant == "small" else (LARGE, 160, 960, 1280)
        c0 = int(16 * wm)
        self.conv_0 = nn.Sequential(nn.Conv2d(3, c0, 3, stride=si, padding=1, bias=False), nn.BatchNorm2d(c0),
                                    HSwish())
        self.bottlenecks_1 = nn.Sequential(*[
            Bottleneck(i, o, k, e, se, a, si if s == "si" else s, wm) for i, o, k, e, se, a, s in table])
        ci, co = int(last_in * wm), int(last_out * wm)
        self.conv_2 = nn.Sequential(nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co), HSwish())
        self.conv_3 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(co, hidden, 1, bias=True), HSwish(),
                                    nn.Dropout(dropout))
        self.conv_4 = nn.Conv2d(hidden, num_classes, 1, bias=True)

    def forward(self, x):
        x = self.conv_3(self.conv_2(self.bottlenecks_1(self.conv_0(x))))
        return torch.flatten(self.conv_4(x), 1)


def used_param_count(model):
    """Parameters that the forward pass uses (SE blocks of non-SE bottlenecks excluded)."""
    n = 0
    for name, p in model.named_parameters():
        parts = name.split(".")
        if parts[0] == "bottlenecks_1" and parts[2] == "se_block" and not model.bottlenecks_1[int(parts[1])].use_se:
            continue
        n += p.numel()
    return n


if __name__ == "__main__":
    m = MobileNetV3("small", 0.25)
    print("small_0.25 used params:", used_param_count(m))


def load_model_file(path, si=None):
    """A model file written by the engine, loaded with strict=True: (model, its header's metadata, with "si"
    and "classes" as the ints the model was built with).

    The network is laid out as the header says (variant, width, classes), with initial stride `si` where given
    (strides leave no trace in the weights), else the header's.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = f.metadata()
    stride = si if si is not None else int(meta["si"])
    model = MobileNetV3(meta["variant"], float(meta["width"]), stride, int(meta.get("num_classes", 100)))
    model.load_state_dict(load_file(path), strict=True)
    return model, dict(meta, si=stride, classes=int(meta.get("num_classes", 100)))
