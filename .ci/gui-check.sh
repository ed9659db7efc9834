#!/usr/bin/env bash
# The real-window check: start the app under Xvfb, drop a photo onto it with a real XDND drag, take a
# screenshot, and check that the window drew and that the dropped file was classified.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/gui-check}"
mkdir -p "$out"
bin=target/release/mobilenetv3
# A copy under a new name: the bundled samples are classified at start, the drop must be seen on its own.
photo="$PWD/$out/dropped-orange.jpg"
cp test_images/orange.jpg "$photo"
display=:97
export DISPLAY=$display
start_x() {
  Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp -noreset >>"$out/xvfb.log" 2>&1 &
  xvfb_pid=$!
  for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
}
# Before each app the next step drives: the X server answers (restarted, and said so, if it went away) and,
# with `alone`, the windows of earlier apps are gone (a closing window must not be the one the step finds).
ready_for_app() {
  xdpyinfo >/dev/null 2>&1 || { echo "(the X server had gone away; restarted)"; start_x; }
  if [ "${1:-}" = alone ]; then
    for _ in $(seq 40); do xdotool search --name 'MobileNetV3 Studio' >/dev/null 2>&1 || break; sleep 0.25; done
  fi
}
# Runs the app (in folder DIR, output to LOG, with ARGS) until LOG shows PATTERN, for at most a minute. An app
# that could not connect to the X server is started once more, saying so: seen once in CI, a second app refused
# right after xdpyinfo had answered. Any other failure is the app's, and the caller's checks report it.
# (Each app runs under `exec timeout`, so that killing the recorded pid ends the app itself: a window left
# behind would be the one the next step finds and drops onto.)
run_app_until() {
  local dir=$1 log=$2 pattern=$3 attempt pid
  shift 3
  for attempt in 1 2; do
    (cd "$dir" && exec timeout 120 "$root/$bin" "$@" >"$log" 2>&1) &
    pid=$!
    for _ in $(seq 120); do grep -q "$pattern" "$log" && break; sleep 0.5; done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$attempt" = 1 ] && grep -q "Failed to open connection to X server" "$log"; then
      echo "(the app could not connect to the X server; started again)"
      ready_for_app
    else
      return 0
    fi
  done
}
root=$PWD
start_x
app_pid=""
cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
  kill "$xvfb_pid" 2>/dev/null || true
}
trap cleanup EXIT
# A fresh settings folder, so the check starts as a new user would.
export XDG_DATA_HOME="$PWD/$out/xdg-data" XDG_CONFIG_HOME="$PWD/$out/xdg-config"
# One log line per classified image, which this check reads.
export MBV3_VERBOSE=1
"$bin" >"$out/app.log" 2>&1 &
app_pid=$!
wid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
echo "window $wid"
# Let the first frames draw and the sample images get classified.
for _ in $(seq 60); do grep -q "classified .*rocket.jpg" "$out/app.log" && break; sleep 0.5; done
/usr/bin/python3 ../shared/tools/xdnd_drop.py "$wid" 600 400 "$photo"
for _ in $(seq 60); do grep -q "classified $photo" "$out/app.log" && break; sleep 0.5; done
sleep 1
import -window root "$out/screenshot.png"
grep "classified $photo" "$out/app.log" || { echo "the dropped photo was not classified"; cat "$out/app.log"; exit 1; }
colors=$(convert "$out/screenshot.png" -format %k info:)
echo "screenshot: $out/screenshot.png ($colors colours)"
[ "$colors" -gt 50 ] || { echo "the window did not draw"; exit 1; }
kill -0 "$app_pid" || { echo "the app exited"; cat "$out/app.log"; exit 1; }
# Export ONNX… beside the model picker: no save dialog here (no portal, no zenity), so the file goes to the
# exports folder and the app says where.
xdotool mousemove --window "$wid" 563 45 click 1
for _ in $(seq 60); do grep -q "^Exported " "$out/app.log" && break; sleep 0.5; done
onnx_file=$(sed -n 's/^Exported large_1.0 to \(.*\.onnx\) (.*opset 17.*/\1/p' "$out/app.log")
[ -n "$onnx_file" ] && [ -s "$onnx_file" ] || { echo "Export ONNX… wrote no file"; cat "$out/app.log"; exit 1; }
echo "exported from the window: $onnx_file ($(stat -c %s "$onnx_file") bytes)"
rm -f "$onnx_file"
# Where it looked: tick Grad-CAM, then click rocket.jpg's second label (rocket; the cards sit one line lower
# under the export's message): its map is computed for that class.
xdotool mousemove --window "$wid" 829 45 click 1
sleep 1
xdotool mousemove --window "$wid" 560 471 click 1
for _ in $(seq 40); do grep -q "^explained .*rocket.jpg: rocket" "$out/app.log" && break; sleep 0.5; done
sleep 1
import -window root "$out/grad-cam.png"
grep "^explained .*rocket.jpg: rocket" "$out/app.log" \
  || { echo "clicking a label with Grad-CAM on did not explain that class"; cat "$out/app.log"; exit 1; }
# Opened from the file manager: the launcher's Exec line with a photo for %F, as the desktop runs it.
launched="$PWD/$out/launched-rocket.jpg"
cp test_images/rocket.jpg "$launched"
exec_line=$(sed -n 's/^Exec=//p' assets/mobilenetv3-studio.desktop)
[ "$exec_line" = "mobilenetv3 %F" ] || { echo "unexpected Exec line: $exec_line"; exit 1; }
run_app_until "$root" "$root/$out/launched.log" "classified $launched" "$launched"
grep "classified $launched" "$out/launched.log" || { echo "a photo opened with the app was not classified"; cat "$out/launched.log"; exit 1; }
if grep -q "classified .*test_images/" "$out/launched.log"; then
  echo "opened with a photo, the app should show that photo, not the samples"; exit 1
fi
echo "opened-with-a-file check passed"

# The same app started in a folder whose trained_models/ also holds hostile files: it must open, offer the good
# model (and classify the samples with it), and name each bad file with its reason.
hostile="$PWD/$out/hostile"
rm -rf "$hostile" && mkdir -p "$hostile/trained_models" "$hostile/test_images"
cp trained_models/mobilenetv3_small_0.25.safetensors "$hostile/trained_models/"
cp test_images/rocket.jpg test_images/apple.jpg "$hostile/test_images/"
/usr/bin/python3 - "$hostile/trained_models" <<'PY'
import json, struct, sys, os
d = sys.argv[1]
good = open(os.path.join(d, "mobilenetv3_small_0.25.safetensors"), "rb").read()
# A 1 KB header whose stem claims 2^44 channels (zero elements, so it parses).
h = {"conv_0.0.weight": {"dtype": "F32", "shape": [2**44, 0, 3, 3], "data_offsets": [0, 0]}}
for i in range(11):
    h["bottlenecks_1.%d.pointwise_0.0.weight" % i] = {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
j = json.dumps(h).encode()
open(os.path.join(d, "a_huge_stem.safetensors"), "wb").write(struct.pack("<Q", len(j)) + j)
# The good model with one NaN weight, claiming a top-1 of 99% so that it would be picked first.
n = struct.unpack("<Q", good[:8])[0]
hdr = json.loads(good[8:8 + n])
b, e = hdr["conv_4.bias"]["data_offsets"]
hdr["__metadata__"]["training"] = json.dumps({"top1": 0.99})
j = json.dumps(hdr).encode()
data = bytearray(good[8 + n:])
data[b:b + 4] = struct.pack("<f", float("nan"))
open(os.path.join(d, "b_nan.safetensors"), "wb").write(struct.pack("<Q", len(j)) + j + bytes(data))
open(os.path.join(d, "c_junk.pth"), "wb").write(b"PK\x03\x04" + os.urandom(600))
open(os.path.join(d, "d_empty.safetensors"), "wb").write(b"")
PY
ready_for_app
run_app_until "$hostile" "$root/$out/hostile.log" "classified .*rocket.jpg"
cat "$out/hostile.log"
grep -q "classified .*rocket.jpg" "$out/hostile.log" || { echo "with hostile model files, nothing was classified"; exit 1; }
for f in a_huge_stem.safetensors c_junk.pth d_empty.safetensors; do
  grep -q "cannot use model file .*$f" "$out/hostile.log" || { echo "$f was not reported"; exit 1; }
done
grep -q "b_nan.safetensors.*not all finite" "$out/hostile.log" || { echo "the NaN model was not refused"; exit 1; }
echo "hostile trained_models/ check passed"
# A new user on a fresh machine gets the data from the Train tab and trains: a loopback server serves an archive
# in the official binary layout (plain pixels), the Download button fetches it, Start trains the first epoch.
# Only this window from here on: the first app is closed.
kill "$app_pid" 2>/dev/null || true
wait "$app_pid" 2>/dev/null || true
app_pid=""
fresh="$PWD/$out/fresh"
rm -rf "$fresh" && mkdir -p "$fresh/trained_models" "$fresh/server"
/usr/bin/python3 - "$fresh/server/cifar-100-binary.tar.gz" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz", compresslevel=1) as tar:
    for name, n in (("train.bin", 50000), ("test.bin", 10000)):
        data = bytearray()
        for i in range(n):
            fine = i % 100
            data += bytes((fine // 5, fine)) + bytes((fine * 2 % 256,)) * 3072
        info = tarfile.TarInfo("cifar-100-binary/" + name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(bytes(data)))
PY
md5=$(md5sum "$fresh/server/cifar-100-binary.tar.gz" | cut -d' ' -f1)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$fresh/server" "$port" >"$out/http.log" 2>&1 &
http_pid=$!
for _ in $(seq 50); do /usr/bin/python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break; sleep 0.1; done
ready_for_app alone
(cd "$fresh" && XDG_DATA_HOME="$fresh/xdg-data" XDG_CONFIG_HOME="$fresh/xdg-config" \
  MBV3_CIFAR_URL="http://127.0.0.1:$port/cifar-100-binary.tar.gz" MBV3_CIFAR_MD5="$md5" \
  exec timeout 600 "$OLDPWD/$bin" gui --tab train >"$OLDPWD/$out/fresh.log" 2>&1) &
fresh_pid=$!
sleep 2
fwid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
sleep 2
import -window root "$out/fresh-before.png"
xdotool mousemove --window "$fwid" 140 72 click 1
for _ in $(seq 240); do grep -q "downloaded\|download failed" "$out/fresh.log" && break; sleep 0.5; done
grep -q "downloaded .*cifar-100-binary.tar.gz" "$out/fresh.log" || { echo "the download from the Train tab failed"; cat "$out/fresh.log"; exit 1; }
sleep 2
# Start, below the form's last field (Seed): move this when the form gains or loses a row.
xdotool mousemove --window "$fwid" 38 693 click 1
for _ in $(seq 600); do grep -q "^epoch 1:" "$out/fresh.log" && break; sleep 0.5; done
import -window root "$out/fresh-after.png"
kill "$fresh_pid" "$http_pid" 2>/dev/null || true
wait "$fresh_pid" 2>/dev/null || true
grep "^epoch 1:" "$out/fresh.log" || { echo "no epoch was trained after the download"; cat "$out/fresh.log"; exit 1; }
ls "$fresh/trained_models/"*.safetensors >/dev/null || { echo "no checkpoint was written"; exit 1; }
echo "download-and-train check passed"
# Your own images in the real window: a folder of class folders dropped on the Train tab (a real XDND drag),
# Start, and the model it trains labels a dropped photo with the folder's class name. The recipe (a short run
# from the shipped small_0.25) is in the settings file, as a user's last form would be.
own="$PWD/$out/own"
rm -rf "$own" && mkdir -p "$own/project/trained_models" "$own/xdg-config/mobilenetv3-studio"
cp trained_models/mobilenetv3_small_0.25.safetensors "$own/project/trained_models/"
/usr/bin/python3 - "$own" <<'PY'
import json, random, struct, sys, zlib
own = sys.argv[1]
def png(path, w, h, rgb, seed):
    rnd = random.Random(seed)
    rows = b"".join(b"\0" + bytes(max(0, min(255, c + rnd.randint(-20, 20))) for _ in range(w) for c in rgb) for _ in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
import os
for name, rgb in (("apples", (210, 40, 30)), ("sky", (50, 110, 230))):
    os.makedirs(f"{own}/my-fruit/{name}")
    for i in range(16):
        png(f"{own}/my-fruit/{name}/{i}.png", 36 + i % 9, 40, rgb, i)
png(f"{own}/red-photo.png", 50, 40, (205, 45, 35), 99)
form = {"source": "Images", "epochs": "8", "batch": "8", "lr": "0.1", "schedule": "Constant",
        "start_from": f"{own}/project/trained_models/mobilenetv3_small_0.25.safetensors", "freeze_backbone": True}
json.dump({"tab": "Train", "train": form}, open(f"{own}/xdg-config/mobilenetv3-studio/settings.json", "w"))
PY
ready_for_app alone
(cd "$own/project" && XDG_CONFIG_HOME="$own/xdg-config" XDG_DATA_HOME="$own/xdg-data" \
  exec timeout 300 "$root/$bin" >"$root/$out/own.log" 2>&1) &
own_pid=$!
owid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
# Once the model list is read (the Start from field needs it), a frame later the window takes drops.
for _ in $(seq 60); do grep -q "^model " "$out/own.log" && break; sleep 0.5; done
# A drop sent while the window is still settling can go unseen: sent again until the app logs it.
for _ in 1 2 3 4 5; do
  sleep 2
  rc=0; /usr/bin/python3 ../shared/tools/xdnd_drop.py "$owid" 600 400 "$own/my-fruit" || rc=$?
  sleep 1
  grep -q "^dropped on the Train tab: $own/my-fruit" "$out/own.log" && break
  echo "(the folder drop was not seen (xdnd_drop exit $rc, window $owid of: $(xdotool search --name 'MobileNetV3 Studio' | tr '\n' ' ')); sent again)"
done
# Before anything trains, the tab previews the dropped folder (classes, counts, a few images of each).
for _ in $(seq 60); do grep -q "^previewed $own/my-fruit" "$out/own.log" && break; sleep 0.5; done
grep -q "^previewed $own/my-fruit: 2 classes, 8 images shown, 0 left out" "$out/own.log" \
  || { echo "the dropped folder was not previewed"; cat "$out/own.log"; exit 1; }
sleep 1
import -window root "$out/own-dropped.png"
# Start, below the form's last field (Seed) on My images (no CIFAR-100 limits, one row for "Train: last layer
# only"): move it when the form changes.
xdotool mousemove --window "$owid" 38 670 click 1
for _ in $(seq 240); do grep -q "^finished\|^training failed" "$out/own.log" && break; sleep 0.5; done
grep -q "^data .*my-fruit: 2 classes (apples, sky)" "$out/own.log" \
  || { echo "the dropped folder was not trained on"; cat "$out/own.log"; exit 1; }
grep -q "^finished my-fruit_small_0.25" "$out/own.log" || { echo "the run on the folder did not finish"; cat "$out/own.log"; exit 1; }
grep -q '"freeze_backbone": true' "$own/project/trained_models/my-fruit_small_0.25.history.json" \
  || { echo "the run on the folder did not train the last layer only, as the form asked"; exit 1; }
sleep 2
import -window "$owid" "$out/own-trained.png"
/usr/bin/python3 ../shared/tools/xdnd_drop.py "$owid" 600 400 "$own/red-photo.png"
for _ in $(seq 60); do grep -q "classified $own/red-photo.png" "$out/own.log" && break; sleep 0.5; done
sleep 1
import -window root "$out/own-classified.png"
# The Evaluate view on the new model (the most accurate listed, so the one it opens on): the folder's validation
# images, no CIFAR-100 here. The tab, then Run evaluation.
xdotool mousemove --window "$owid" 369 13 click 1
sleep 1
xdotool mousemove --window "$owid" 508 45 click 1
for _ in $(seq 60); do grep -q "^evaluated" "$out/own.log" && break; sleep 0.5; done
sleep 1
import -window root "$out/own-evaluated.png"
kill "$own_pid" 2>/dev/null || true
wait "$own_pid" 2>/dev/null || true
grep "classified $own/red-photo.png: apples" "$out/own.log" \
  || { echo "the new model did not label the photo with the folder's class"; cat "$out/own.log"; exit 1; }
grep "^evaluated .*my-fruit_small_0.25.safetensors: top-1 .* on [0-9]* test images" "$out/own.log" \
  || { echo "the Evaluate view did not evaluate the new model on its folder"; cat "$out/own.log"; exit 1; }
echo "own-images check passed"
# The Evaluate view on the bundled model, on the real test split when it is there (CI has it).
if [ -f ../shared/data/cifar-100-binary/test.bin ]; then
  ready_for_app alone
  timeout 300 "$bin" gui --tab evaluate >"$out/evaluate.log" 2>&1 &
  eval_pid=$!
  ewid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
  sleep 3
  xdotool mousemove --window "$ewid" 508 45 click 1
  for _ in $(seq 240); do grep -q "^evaluated" "$out/evaluate.log" && break; sleep 0.5; done
  import -window root "$out/evaluate.png"
  kill "$eval_pid" 2>/dev/null || true
  wait "$eval_pid" 2>/dev/null || true
  # It opens on the most accurate model, the default; its top-1 as the README's table of trained models states it.
  default=$(sed -n 's/^ *"\(mobilenetv3_[^"]*\.safetensors\)",$/\1/p' src/cli/bundle.rs)
  claimed=$(grep "^| \`$default\`" README.md | grep -o '\*\*[0-9.]*%\*\*' | tr -d '*')
  [ -n "$default" ] && [ -n "$claimed" ] || { echo "no README figure for the default model '$default'"; exit 1; }
  grep "^evaluated .*$default: top-1 $claimed" "$out/evaluate.log" \
    || { echo "the Evaluate view did not give $default's $claimed"; cat "$out/evaluate.log"; exit 1; }
  echo "evaluate-view check passed"
else
  echo "SKIPPED: the Evaluate view check needs ../shared/data/cifar-100-binary"
fi
echo "real-window check passed"
