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
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$out/xvfb.log" 2>&1 &
xvfb_pid=$!
app_pid=""
cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
  kill "$xvfb_pid" 2>/dev/null || true
}
trap cleanup EXIT
export DISPLAY=$display
for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
# A fresh settings folder, so the check starts as a new user would.
export XDG_DATA_HOME="$PWD/$out/xdg-data" XDG_CONFIG_HOME="$PWD/$out/xdg-config"
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
echo "real-window check passed"
