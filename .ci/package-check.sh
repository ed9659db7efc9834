#!/usr/bin/env bash
# The Debian package, checked as a user would meet it: build it, extract it into a temporary root outside the
# project (so no project folder can be found), validate the launcher, run the extracted binary's --version and
# classify on a bundled photo, and start it under Xvfb through the launcher's Exec line with a photo, from a
# folder with nothing in it and a fresh home, as a menu or file manager would. Then install it with dpkg,
# check that the user's models survive its removal.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/${1:-target/package-check}"
rm -rf "$out" && mkdir -p "$out"

for p in desktop-file-utils xvfb xauth xdotool imagemagick x11-utils python3-xlib; do
  dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done

deb=$(realpath "$(bash .ci/package.sh | tail -1)")
echo "package: $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb -f "$deb" Package Version Depends Recommends

work=$(mktemp -d /tmp/mbv3-package-check.XXXXXX)
app_pid=""
xvfb_pid=""
cleanup() {
  [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
  [ -n "$xvfb_pid" ] && kill "$xvfb_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"
dpkg-deb -x "$deb" "$root"
bin="$root/usr/bin/mobilenetv3"
desktop="$root/usr/share/applications/mobilenetv3-studio.desktop"

desktop-file-validate "$desktop"
echo "desktop file valid"
grep -q '^Exec=mobilenetv3 %F$' "$desktop"
grep -q '^MimeType=.*image/jpeg' "$desktop"
for size in 16 32 48 64 128 256; do
  test -s "$root/usr/share/icons/hicolor/${size}x${size}/apps/mobilenetv3-studio.png"
done
test -s "$root/usr/share/bash-completion/completions/mobilenetv3"
test -s "$root/usr/share/man/man1/mobilenetv3.1.gz"

# A new user: empty home, started from an empty folder.
home="$work/home"
mkdir -p "$home" "$work/elsewhere"
cd "$work/elsewhere"
export HOME="$home"
unset XDG_DATA_HOME XDG_CONFIG_HOME CIFAR100_DIR || true

"$bin" --version | tee "$out/version.txt"
grep -q "^mobilenetv3 " "$out/version.txt"
"$bin" classify "$root/usr/share/mobilenetv3-studio/test_images/rocket.jpg" | tee "$out/classify.txt"
grep -q "rocket" "$out/classify.txt" || { echo "classify with the bundled model did not answer rocket"; exit 1; }
# With no argument, classify uses the bundled model and photos.
"$bin" classify --top 1 >"$out/classify-samples.txt"
[ "$(grep -c '\.jpg\|\.png' "$out/classify-samples.txt")" -ge 12 ] || { cat "$out/classify-samples.txt"; exit 1; }
echo "classify from the package: ok"

# The user's own model beside the bundled ones.
mkdir -p "$home/.local/share/mobilenetv3-studio/trained_models"
cp "$root/usr/share/mobilenetv3-studio/trained_models/mobilenetv3_small_0.25.safetensors" \
  "$home/.local/share/mobilenetv3-studio/trained_models/my_model.safetensors"

# The launcher's Exec line with a photo for %F, as the desktop runs it (binary found on the PATH).
display=:96
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp -noreset >"$out/xvfb.log" 2>&1 &
xvfb_pid=$!
export DISPLAY=$display
for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
photo="$work/elsewhere/opened orange.jpg"
cp "$root/usr/share/mobilenetv3-studio/test_images/orange.jpg" "$photo"
exec_line=$(sed -n 's/^Exec=//p' "$desktop")
cmd=${exec_line/\%F/}
export MBV3_VERBOSE=1
PATH="$root/usr/bin:$PATH" $cmd "$photo" >"$out/app.log" 2>&1 &
app_pid=$!
wid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
for _ in $(seq 120); do grep -q "classified $photo" "$out/app.log" && break; sleep 0.5; done
sleep 1
import -window root "$out/screenshot.png"
grep -q "classified $photo" "$out/app.log" || { echo "the photo opened through the launcher was not classified"; cat "$out/app.log"; exit 1; }
grep -q "^model $root/usr/share/mobilenetv3-studio/trained_models/mobilenetv3_small_0.25.safetensors .*bundled" "$out/app.log" \
  || { echo "the bundled model is not listed"; cat "$out/app.log"; exit 1; }
grep -q "^model $home/.local/share/mobilenetv3-studio/trained_models/my_model.safetensors" "$out/app.log" \
  || { echo "the user's model is not listed"; cat "$out/app.log"; exit 1; }
colors=$(convert "$out/screenshot.png" -format %k info:)
[ "$colors" -gt 50 ] || { echo "the window did not draw"; exit 1; }
kill -0 "$app_pid" || { echo "the app exited"; cat "$out/app.log"; exit 1; }
echo "window $wid drew ($colors colours) and classified the photo; screenshot $out/screenshot.png"
# Closing the window writes the settings into the config folder.
# (as a window manager closes it: a WM_DELETE_WINDOW message, which eframe answers by saving and exiting).
/usr/bin/python3 - "$wid" <<'PY'
import sys
from Xlib import X, display, protocol
d = display.Display()
w = d.create_resource_object("window", int(sys.argv[1]))
proto, delete = d.intern_atom("WM_PROTOCOLS"), d.intern_atom("WM_DELETE_WINDOW")
ev = protocol.event.ClientMessage(window=w, client_type=proto, data=(32, [delete, X.CurrentTime, 0, 0, 0]))
w.send_event(ev, event_mask=X.NoEventMask)
d.flush()
PY
for _ in $(seq 40); do kill -0 "$app_pid" 2>/dev/null || break; sleep 0.25; done
app_pid=""
test -s "$home/.config/mobilenetv3-studio/settings.json" || { echo "no settings in the config folder"; ls -R "$home"; exit 1; }
echo "settings saved to ~/.config/mobilenetv3-studio/settings.json"

# Installed for real and removed again: the user's models stay.
if [ "$(id -u)" = 0 ] && ! dpkg -s mobilenetv3-studio >/dev/null 2>&1; then
  dpkg -i "$deb" >"$out/dpkg-install.log"
  /usr/bin/mobilenetv3 --version >/dev/null
  dpkg -r mobilenetv3-studio >"$out/dpkg-remove.log"
  test ! -e /usr/bin/mobilenetv3
  test -s "$home/.local/share/mobilenetv3-studio/trained_models/my_model.safetensors"
  echo "dpkg -i / dpkg -r: installed, ran, removed; the user's model is still there"
fi
echo "package check passed"
