"""PyTorch doing the fine-tuning that `mobilenetv3 train --images DIR ...` does, so that PyTorch's validation
accuracy on a folder of photos can be set beside the engine's. Same data, same recipe, same network
(mbv3_ref.MobileNetV3, loaded with strict=True), written from the engine's source:

  data       src/data/folder.rs (scan, layouts, class order), src/data/preprocess.rs (decode, resize),
             src/data/folder_load.rs (decoded once at N x N, kept as bytes; crop area 35%)
  augment    src/data/mod.rs (resized_crop_region, prepare_resized, prepare_image, epoch_batches)
  start      src/train/start.rs (the file's weights; a new classifier unless the classes are the file's, in order)
  loop       src/train/mod.rs (per-epoch seed, drop_last, lr set before every step, backbone lr factor)
  schedule   src/train/config.rs (Schedule::lr), defaults in TrainConfig::reference / src/train/options.rs
  SGD        src/train/optim.rs (PyTorch's rule: buf = m * buf + g, p -= lr * buf)
  last layer src/train/head_only.rs (embeddings once, plain + mirrored; each drawn at random per epoch)

Usage (the engine's option names; defaults are the engine's):
    finetune_torch.py --images DIR --from MODEL.safetensors [--freeze-backbone] --image-size 32 \\
        --epochs 10 --batch 32 --lr 0.1 --schedule cosine --seed 1 [--json out.json]
    finetune_torch.py --images DIR --scratch --variant large --width 1.0 ...   (fresh weights, like no --from)

Prints one line per epoch (validation top-1 after it), then
    RESULT final_top1=XX.XX best_top1=YY.YY best_epoch=E wall_s=S
best_* is the highest validation top-1 over the epochs (earliest on ties). The engine's own "best:" line and
kept checkpoint are chosen by the lowest validation loss (--select-by val-loss, its default); that epoch is
printed too, as a `BY_VAL_LOSS` line and in the JSON.

What is the same as the engine (checked against its source):
  - classes = the class folder names, sorted; train/ + val/ (or test/) layout, or class folders in the root with
    round(20%) of each class held out by the engine's own hash of (seed, path) (src/data/folder.rs:hold_out,
    rank; reimplemented here, not checked file by file against the binary); extensions png jpg jpeg bmp gif
    webp (any case); hidden entries ignored; deeper folders count for their class; files that do not decode
    skipped.
  - every image decoded once, EXIF orientation applied, to RGB, squashed to N x N, kept as bytes;
    normalised with CIFAR-100's mean and std (src/data/labels.rs: CIFAR100_MEAN / CIFAR100_STD).
  - all layers: per image a random resized crop (area U(0.35, 1) of the image, aspect exp(U(ln 3/4, ln 4/3)),
    at a uniform real-valued place, ten tries then the whole image) resampled to N x N with the engine's own
    bilinear taps (align_corners=False, source coordinates clamped to the image, float32 arithmetic in the
    same order), then a horizontal flip with p = 0.5; the crop is drawn before the flip. Batches shuffled
    each epoch, the last partial batch dropped. Train mode: BatchNorm on batch statistics (running statistics
    updated with momentum 0.1, unbiased variance), dropout 0.2 before the classifier.
  - last layer only: backbone and hidden layer in eval mode; each training image embedded once as it is and
    once mirrored, each validation image once; an epoch is the training images shuffled, cut into whole
    batches, each image's plain or mirrored embedding drawn with p = 0.5; dropout 0.2 on the embeddings, then
    the classifier; only conv_4 (the classifier) trains, at the full lr.
  - SGD momentum 0.9, weight decay 0, no Nesterov, label smoothing 0 (defaults); with --from, every trained
    parameter except conv_4.weight / conv_4.bias at lr x --backbone-lr-factor (0.1), also when the file's
    classifier is kept; without --from (--scratch) every parameter at lr.
  - cosine: t = epoch + step / steps_per_epoch, lr = base * (t + 0.001) / w while t < w (w = --warmup-epochs,
    1), then 0.5 * base * (1 + cos(pi * min(1, (t - w) / (epochs - w)))); set before every step. MultiStep
    and constant as the engine's too.
  - the new classifier's weights are drawn from the same distribution as the engine's default init (--init
    torch: weight and bias uniform in +-1/sqrt(fan_in), which is PyTorch's nn.Conv2d default); with --scratch
    every layer is PyTorch's default init, the engine's --init torch.
  - validation: eval mode, the plain images, top-1 / top-5 and mean cross-entropy (no smoothing).

What cannot be identical:
  - random streams: the engine draws the classifier's init, the order, the crops, the flips and the dropout
    masks from Rust's StdRng (ChaCha12) seeded by --seed (per epoch: seed * 1000003 + epoch, the same
    structure is used here with NumPy's PCG64 and torch's generator); the same --seed gives a different, equally
    distributed run. Results should be compared over seeds, not run for run.
  - decoding: the engine uses the Rust `image` crate (zune-jpeg for JPEG); Pillow uses libjpeg(-turbo), whose
    IDCT and chroma upsampling may differ by a level or two. A GIF's transparent pixels and 16-bit / CMYK
    images may convert to RGB differently.
  - resizing: the engine's `image::imageops::resize(.., FilterType::Triangle)` is an antialiased triangle
    filter (support scaled by the reduction), vertical pass first in float32, rounded once at the end;
    Pillow's `resize((N, N), Image.BILINEAR)` is the same filter (same weights) but horizontal first, with
    fixed-point coefficients and the intermediate rounded to 8 bits: pixels can differ by about one level.
  - arithmetic: the engine's CPU kernels (BatchNorm folded into the convolutions for evaluation and for the
    last-layer embeddings) and PyTorch's differ by float rounding (logits agree to ~1e-4, see check_load.py).
"""
import argparse
import json
import math
import os
import stat
import sys
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mbv3_ref import MobileNetV3  # noqa: E402

# src/data/labels.rs
CIFAR100_MEAN = np.array([0.5071, 0.4865, 0.4409], dtype=np.float32)
CIFAR100_STD = np.array([0.2673, 0.2564, 0.2762], dtype=np.float32)
# src/data/preprocess.rs
IMAGE_EXTENSIONS = {"png", "jpg", "jpeg", "bmp", "gif", "webp"}
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 256 << 20
# src/data/folder.rs, src/data/folder_load.rs
TRAIN_DIR, VAL_DIRS = "train", ("val", "test")
MIN_CROP_AREA = 0.35
MIN_SIDE, MAX_SIDE = 16, 512
# src/train/head_only.rs, src/train/evaluate.rs call sites
EMBED_BATCH, EVAL_BATCH = 128, 256
U64 = (1 << 64) - 1


# ---------------------------------------------------------------- the folder (src/data/folder.rs)

def listing(d):
    """The entries of d that are not hidden, sorted by name (as bytes, as Rust sorts OsString)."""
    entries = [e for e in os.scandir(d) if not e.name.startswith(".")]
    return sorted(entries, key=lambda e: os.fsencode(e.name))


def has_image_extension(path):
    ext = os.path.splitext(path)[1]
    return ext.startswith(".") and ext[1:].lower() in IMAGE_EXTENSIONS


def class_folders(d, skipped):
    """Folders directly in d (links followed) whose names can be class names; files there are skipped."""
    out = []
    for e in listing(d):
        if os.path.isdir(e.path):
            if any(unicodedata.category(c) == "Cc" for c in e.name):
                skipped.append((e.path, "a folder name with control characters"))
            else:
                out.append((e.name, e.path))
        else:
            reason = "not inside a class folder" if has_image_extension(e.path) else "not an image (by its extension)"
            skipped.append((e.path, reason))
    return out


def class_images(d, skipped):
    """Image files under a class folder (deeper folders too, links to folders not followed), sorted."""
    images = []

    def walk(folder):
        for e in listing(folder):
            if e.is_dir(follow_symlinks=False):
                walk(e.path)
                continue
            if e.is_symlink() and os.path.isdir(e.path):
                skipped.append((e.path, "a link to a folder (not followed)"))
                continue
            if not has_image_extension(e.path):
                skipped.append((e.path, "not an image (by its extension)"))
                continue
            try:
                st = os.stat(e.path)
                if not stat.S_ISREG(st.st_mode):
                    skipped.append((e.path, "not a regular file"))
                elif st.st_size == 0:
                    skipped.append((e.path, "an empty file"))
                elif st.st_size > MAX_FILE_BYTES:
                    skipped.append((e.path, "too large"))
                else:
                    open(e.path, "rb").close()
                    images.append(e.path)
            except OSError as err:
                skipped.append((e.path, f"cannot be read: {err}"))

    walk(d)
    if not images:
        sys.exit(f"class folder {d} has no images")
    return sorted(images, key=os.fsencode)


def rank(seed, relative):
    """The engine's stable hash of (seed, path inside the class folder): FNV-1a, then SplitMix64's finaliser."""
    h = 0xCBF29CE484222325
    for b in seed.to_bytes(8, "little") + os.fsencode(relative):
        h ^= b
        h = (h * 0x00000100000001B3) & U64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & U64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & U64
    return h ^ (h >> 31)


def round_half_away(x):
    """Rust's f64::round for x >= 0."""
    i = math.floor(x)
    return i + 1 if x - i >= 0.5 else i


def scan(root, val_fraction, seed):
    """(classes, [(path, class)] train, [(path, class)] val, layout, skipped), as ImageFolder::scan."""
    skipped = []
    top = class_folders(root, skipped)
    top.sort(key=lambda t: os.fsencode(t[0]))

    def named(wanted):
        return next((t for t in top if t[0].lower() == wanted), None)

    train_dir = named(TRAIN_DIR)
    val_dirs = [t for t in (named(v) for v in VAL_DIRS) if t is not None]
    train, val = [], []
    if train_dir is None and not val_dirs:
        classes = top
        for c, (name, d) in enumerate(classes):
            paths = class_images(d, skipped)
            n = len(paths)
            k = 0 if n < 2 else min(max(round_half_away(n * val_fraction), 1), n - 1)
            ranked = sorted((rank(seed, os.path.relpath(p, d)), os.fsencode(p), p) for p in paths)
            held = sorted((p for _, _, p in ranked[:k]), key=os.fsencode)
            kept = sorted((p for _, _, p in ranked[k:]), key=os.fsencode)
            val += [(p, c) for p in held]
            train += [(p, c) for p in kept]
        layout = f"class folders in the root, {val_fraction:.0%} of each held out (seed {seed})"
    else:
        if train_dir is None or not val_dirs:
            sys.exit(f"{root}: needs both train/ and val/ (or test/)")
        val_dir = val_dirs[0]
        train_classes = class_folders(train_dir[1], skipped)
        train_classes.sort(key=lambda t: os.fsencode(t[0]))
        val_classes = class_folders(val_dir[1], skipped)
        val_classes.sort(key=lambda t: os.fsencode(t[0]))
        if [n for n, _ in train_classes] != [n for n, _ in val_classes]:
            sys.exit(f"{root}: {train_dir[0]}/ and {val_dir[0]}/ hold different class folders")
        classes = train_classes
        for c, ((name, td), (_, vd)) in enumerate(zip(train_classes, val_classes)):
            train += [(p, c) for p in class_images(td, skipped)]
            val += [(p, c) for p in class_images(vd, skipped)]
        layout = f"{train_dir[0]}/ and {val_dir[0]}/"
    if len(classes) < 2:
        sys.exit(f"{root}: fewer than 2 class folders")
    return [n for n, _ in classes], train, val, layout, skipped


# ---------------------------------------------------------------- decoding (src/data/preprocess.rs)

def decode(path, side):
    """CHW uint8 at side x side: EXIF orientation applied, RGB, squashed with Pillow's antialiased BILINEAR
    (the closest to the image crate's FilterType::Triangle; see the module's notes)."""
    with Image.open(path) as im:
        w, h = im.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"{w} x {h} pixels: larger than the engine decodes")
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        if im.size != (side, side):
            im = im.resize((side, side), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def decode_split(samples, side, threads, skipped):
    Image.MAX_IMAGE_PIXELS = None  # the engine's own limit is checked in decode()

    def one(sample):
        try:
            return decode(sample[0], side)
        except Exception as err:  # a file that does not decode is skipped and listed, never a crash
            return err

    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(one, samples))
    images, labels = [], []
    for (path, c), r in zip(samples, results):
        if isinstance(r, Exception):
            skipped.append((path, f"cannot be read: {r}"))
        else:
            images.append(r)
            labels.append(c)
    return np.stack(images), np.array(labels, dtype=np.int64)


# ---------------------------------------------------------------- augmentation (src/data/mod.rs)

def normalise(pixels):
    """(n, 3, h, w) bytes or floats in 0..255 to normalised float32, as (p / 255 - mean) / std in f32."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    return (x - CIFAR100_MEAN[:, None, None]) / CIFAR100_STD[:, None, None]


def resized_crop_region(rng, side, min_area):
    """(y, x, h, w) of a random resized crop, as resized_crop_region: area, then ratio, then place."""
    full = float(side)
    for _ in range(10):
        area = full * full * rng.uniform(min(max(min_area, 0.01), 1.0), 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if w <= full and h <= full:
            return rng.uniform(0.0, full - h), rng.uniform(0.0, full - w), h, w
    return 0.0, 0.0, full, full


def taps(start, length, side):
    """For each output row (or column): source index, its neighbour and the weight of the neighbour: the
    source coordinate start + (i + 0.5) * length / side - 0.5 clamped to the image (align_corners=False)."""
    last = float(side - 1)
    s = np.clip(start + (np.arange(side, dtype=np.float64) + 0.5) * length / side - 0.5, 0.0, last)
    i0 = np.floor(s).astype(np.int64)
    return i0, np.minimum(i0 + 1, side - 1), (s - i0).astype(np.float32)


def prepare_resized(src, region, flip):
    """One CHW uint8 image: `region` resampled bilinearly to the full size, optionally mirrored, normalised
    (prepare_resized: the same taps, in float32 in the same order)."""
    side = src.shape[1]
    y, x, h, w = region
    y0, y1, fy = taps(y, h, side)
    x0, x1, fx = taps(x, w, side)
    if flip:
        x0, x1, fx = x0[::-1], x1[::-1], fx[::-1]
    p = src.astype(np.float32)
    p00, p01 = p[:, y0][:, :, x0], p[:, y0][:, :, x1]
    p10, p11 = p[:, y1][:, :, x0], p[:, y1][:, :, x1]
    top = p00 + (p01 - p00) * fx[None, None, :]
    bottom = p10 + (p11 - p10) * fx[None, None, :]
    v = top + (bottom - top) * fy[None, :, None]
    return normalise(v[None])[0]


def prepare_plain(src, flip):
    """prepare_image at offset (0, 0): the image as it is, optionally mirrored, normalised."""
    return normalise((src[:, :, ::-1] if flip else src)[None])[0]


def epoch_seed(seed, epoch):
    """The engine's per-epoch seed (src/train/mod.rs): seed * 1000003 + epoch, wrapping."""
    return (seed * 1_000_003 + epoch) & U64


def image_batches(images, labels, batch, crop, flip, seed):
    """One epoch of augmented batches (epoch_batches): shuffled, whole batches only; per image the crop is
    drawn, then the flip."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    side = images.shape[2]
    for b in range(len(order) // batch):
        idx = order[b * batch:(b + 1) * batch]
        out = np.empty((batch, 3, side, side), dtype=np.float32)
        for j, i in enumerate(idx):
            region = resized_crop_region(rng, side, MIN_CROP_AREA) if crop else None
            mirrored = flip and bool(rng.integers(0, 2))
            out[j] = prepare_resized(images[i], region, mirrored) if crop else prepare_plain(images[i], mirrored)
        yield torch.from_numpy(out), torch.from_numpy(labels[idx])


# ---------------------------------------------------------------- schedule (src/train/config.rs)

def schedule_lr(args, epoch, progress):
    if args.schedule == "multistep":
        return args.lr * args.gamma ** sum(epoch >= m for m in args.milestones)
    if args.schedule == "constant":
        return args.lr
    t, w = epoch + progress, float(args.warmup_epochs)
    if t < w:
        return args.lr * (t + 1e-3) / w
    span = max(args.epochs - w, 1e-9)
    return 0.5 * args.lr * (1.0 + math.cos(math.pi * min((t - w) / span, 1.0)))


# ---------------------------------------------------------------- the model (src/train/start.rs)

def build_model(args, classes):
    """The start model: a file's weights (strict=True) with a fresh classifier for `classes` unless the file
    has these classes in this order, or fresh weights (--scratch). The fresh classifier and fresh layers take
    PyTorch's default init, the distribution of the engine's --init torch."""
    if args.scratch:
        meta = {"variant": args.variant, "width": args.width, "si": args.si}
        model = MobileNetV3(args.variant, args.width, args.si, len(classes), dropout=args.dropout)
        return model, meta, False
    with safe_open(args.start_from, "pt") as f:
        meta = f.metadata()
    file_classes = json.loads(meta["class_names"]) if "class_names" in meta else None
    model = MobileNetV3(meta["variant"], float(meta["width"]), int(meta["si"]), int(meta.get("num_classes", 100)),
                        dropout=args.dropout)
    model.load_state_dict(load_file(args.start_from), strict=True)
    head_kept = file_classes == classes
    if not head_kept:
        old = model.conv_4
        model.conv_4 = nn.Conv2d(old.in_channels, len(classes), 1, bias=True)
    return model, meta, head_kept


def embed(model, x):
    """The classifier's input (n, hidden): everything but dropout and conv_4."""
    return torch.flatten(model.conv_3(model.conv_2(model.bottlenecks_1(model.conv_0(x)))), 1)


def classify(model, h, train):
    """conv_4 (a 1x1 convolution, i.e. a linear layer) on embeddings, after dropout in training."""
    h = F.dropout(h, model.conv_3[3].p, training=train)
    return torch.flatten(model.conv_4(h[:, :, None, None]), 1)


def tally(logits, labels):
    """(loss sum, top-1 count, top-5 count)."""
    loss = F.cross_entropy(logits, labels, reduction="sum").item()
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return loss, (top[:, 0] == labels).sum().item(), (top == labels[:, None]).any(dim=1).sum().item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="folder of class folders, or train/ + val/ (or test/)")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from", dest="start_from", help="model file (.safetensors) to start from")
    start.add_argument("--scratch", action="store_true", help="fresh weights (the engine without --from)")
    p.add_argument("--variant", "--model", default="small", choices=["small", "large"], help="with --scratch")
    p.add_argument("--width", type=float, default=0.25, help="with --scratch")
    p.add_argument("--si", type=int, default=1, help="initial stride, with --scratch")
    p.add_argument("--freeze-backbone", action="store_true", help="last layer only (needs --from)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--val-split", type=float, default=0.2, help="held out per class when there is no val/")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--schedule", default="multistep", choices=["multistep", "cosine", "constant"])
    p.add_argument("--milestones", default="15,20,30")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.2, help="the engine's ModelConfig default (no option there)")
    p.add_argument("--no-crop", action="store_true")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--backbone-lr-factor", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    args.milestones = [int(m) for m in args.milestones.split(",") if m.strip()]
    if args.freeze_backbone and args.scratch:
        sys.exit("--freeze-backbone keeps a trained backbone: give --from")
    if not MIN_SIDE <= args.image_size <= MAX_SIDE:
        sys.exit(f"--image-size must be between {MIN_SIDE} and {MAX_SIDE}")

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    classes, train_s, val_s, layout, skipped = scan(args.images, args.val_split, args.seed)
    side = args.image_size
    train_x, train_y = decode_split(train_s, side, args.threads, skipped)
    val_x, val_y = decode_split(val_s, side, args.threads, skipped)
    if np.bincount(train_y, minlength=len(classes)).min() == 0:
        sys.exit("a class has no training image left")
    decode_s = time.perf_counter() - t_start
    print(f"data {args.images} ({layout}): {len(classes)} classes, {len(train_y)} training / {len(val_y)} "
          f"validation images at {side}x{side}, decoded in {decode_s:.1f}s", file=sys.stderr)
    tc, vc = np.bincount(train_y, minlength=len(classes)), np.bincount(val_y, minlength=len(classes))
    for i, name in enumerate(classes):
        print(f"  {name:<24} {tc[i]:>6} train {vc[i]:>6} val", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} file(s):", file=sys.stderr)
        for path, why in skipped[:10]:
            print(f"  {path}: {why}", file=sys.stderr)
    if len(train_y) < args.batch:
        sys.exit(f"{len(train_y)} training images: fewer than one batch of {args.batch}")

    model, meta, head_kept = build_model(args, classes)
    head = [model.conv_4.weight, model.conv_4.bias]
    if args.freeze_backbone:
        for q in model.parameters():
            q.requires_grad_(False)
        for q in head:
            q.requires_grad_(True)
        groups = [{"params": head, "factor": 1.0}]
    else:
        body = [q for n, q in model.named_parameters() if not n.startswith("conv_4.")]
        factor = 1.0 if args.scratch else args.backbone_lr_factor
        groups = [{"params": body, "factor": factor}, {"params": head, "factor": 1.0}]
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                          nesterov=args.nesterov)
    start_what = "fresh weights" if args.scratch else f"{args.start_from} ({'its' if head_kept else 'a new'} classifier)"
    print(f"model {meta['variant']}_{float(meta['width'])} si {meta['si']} from {start_what}; "
          f"{'last layer only' if args.freeze_backbone else 'all layers'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)

    val_inputs = torch.from_numpy(normalise(val_x))
    val_labels = torch.from_numpy(val_y)
    flip = not args.no_flip
    if args.freeze_backbone:
        model.eval()
        with torch.no_grad():
            def embed_all(x):
                return torch.cat([embed(model, x[i:i + EMBED_BATCH]) for i in range(0, len(x), EMBED_BATCH)])
            train_plain = embed_all(torch.from_numpy(normalise(train_x)))
            train_mirrored = embed_all(torch.from_numpy(normalise(train_x[:, :, :, ::-1]))) if flip else None
            val_embedded = embed_all(val_inputs)
        print(f"embedded {len(train_y) * (1 + flip) + len(val_y)} images in "
              f"{time.perf_counter() - t_start - decode_s:.1f}s", file=sys.stderr)

    steps = len(train_y) // args.batch
    history = []
    for epoch in range(args.epochs):
        t_epoch = time.perf_counter()
        seed = epoch_seed(args.seed, epoch)
        if args.freeze_backbone:
            def head_batches():
                rng = np.random.default_rng(seed)
                order = rng.permutation(len(train_y))
                for b in range(steps):
                    idx = order[b * args.batch:(b + 1) * args.batch]
                    use = [flip and bool(rng.integers(0, 2)) for _ in idx]
                    rows = [(train_mirrored if m else train_plain)[i] for i, m in zip(idx, use)]
                    yield torch.stack(rows), torch.from_numpy(train_y[idx])
            batches = head_batches()
        else:
            model.train()
            batches = image_batches(train_x, train_y, args.batch, not args.no_crop, flip, seed)
        loss_sum = correct = seen = 0
        lr = schedule_lr(args, epoch, 0.0)
        for index, (x, y) in enumerate(batches):
            lr = schedule_lr(args, epoch, index / steps)
            for g in opt.param_groups:
                g["lr"] = lr * g["factor"]
            logits = classify(model, x, True) if args.freeze_backbone else model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        model.eval()
        sums = np.zeros(3)
        with torch.no_grad():
            for i in range(0, len(val_y), EVAL_BATCH):
                logits = (classify(model, val_embedded[i:i + EVAL_BATCH], False) if args.freeze_backbone
                          else model(val_inputs[i:i + EVAL_BATCH]))
                sums += tally(logits, val_labels[i:i + EVAL_BATCH])
        n = len(val_y)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1),
               "val_loss": sums[0] / n, "top1": 100 * sums[1] / n, "top5": 100 * sums[2] / n, "lr": lr,
               "epoch_s": time.perf_counter() - t_epoch}
        history.append(rec)
        print(f"Epoch {epoch + 1}/{args.epochs}: train loss {rec['train_loss']:.4f} (top-1 {rec['train_top1']:.2f}%), "
              f"val loss {rec['val_loss']:.4f}, top-1 {rec['top1']:.2f}%, top-5 {rec['top5']:.2f}%, lr {lr:.4f}, "
              f"{rec['epoch_s']:.1f}s", flush=True)

    wall = time.perf_counter() - t_start
    best = max(history, key=lambda r: (r["top1"], -r["epoch"]))
    by_loss = min(history, key=lambda r: (r["val_loss"], r["epoch"]))
    result = {"final_top1": round(history[-1]["top1"], 2), "best_top1": round(best["top1"], 2),
              "best_epoch": best["epoch"], "wall_s": round(wall, 1)}
    print(f"BY_VAL_LOSS epoch={by_loss['epoch']} top1={by_loss['top1']:.2f} val_loss={by_loss['val_loss']:.4f}")
    print("RESULT " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) and k != "wall_s" else f"{k}={v}"
                               for k, v in result.items()))
    if args.json:
        full = dict(result, by_val_loss_epoch=by_loss["epoch"], by_val_loss_top1=round(by_loss["top1"], 2),
                    decode_s=round(decode_s, 1), classes=classes, train_images=int(len(train_y)),
                    val_images=int(n), skipped=len(skipped), args=vars(args), torch=torch.__version__,
                    history=history)
        with open(args.json, "w") as f:
            json.dump(full, f, indent=1)


if __name__ == "__main__":
    main()
