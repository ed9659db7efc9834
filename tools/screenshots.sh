#!/usr/bin/env bash
# Takes the README's screenshots of each tab in a real window under Xvfb (development only; needs the Debian
# packages that .ci/run installs). Usage: tools/screenshots.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/screenshots}"
mkdir -p "$out"
display=:96
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp -noreset >/dev/null 2>&1 &
xvfb=$!
trap 'kill $xvfb 2>/dev/null || true' EXIT
export DISPLAY=$display
sleep 1
tmp=$(mktemp -d)
export XDG_DATA_HOME="$tmp/data" XDG_CONFIG_HOME="$tmp/config"
shoot() { # tab, file, seconds to wait
  target/release/mobilenetv3 gui --tab "$1" >"$tmp/$1.log" 2>&1 &
  local app=$!
  local wid
  wid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
  sleep $((3 + $3))
  import -window "$wid" "$out/$2"
  kill $app; wait $app 2>/dev/null || true
}
only="${ONLY:-classify train evaluate latency preview}"
[[ $only == *classify* ]] && shoot classify classify.png 6
[[ $only == *train* ]] && shoot train train.png 3
# Evaluate: press "Run evaluation" (needs CIFAR-100 where the Train tab looks for it), hover the heatmap.
if [[ $only == *evaluate* ]]; then
  target/release/mobilenetv3 gui --tab evaluate >"$tmp/evaluate.log" 2>&1 &
  app=$!
  wid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
  sleep 3
  xdotool mousemove --window "$wid" 508 45 click 1
  sleep "${EVALUATE_WAIT:-45}"
  xdotool mousemove --window "$wid" 560 330
  sleep 1
  import -window "$wid" "$out/evaluate.png"
  kill $app; wait $app 2>/dev/null || true
fi
# Latency: press Run (all six variants, batch 1, CPU), then the same run as *Accuracy against latency*.
if [[ $only == *latency* ]]; then
  target/release/mobilenetv3 gui --tab latency >"$tmp/latency.log" 2>&1 &
  app=$!
  wid=$(timeout 60 xdotool search --sync --name 'MobileNetV3 Studio' | head -1)
  sleep 3
  xdotool mousemove --window "$wid" ${LATENCY_RUN_AT:-35 225} click 1
  sleep "${LATENCY_WAIT:-40}"
  import -window "$wid" "$out/latency.png"
  xdotool mousemove --window "$wid" ${ACCURACY_VIEW_AT:-677 45} click 1
  sleep 2
  import -window "$wid" "$out/latency_accuracy.png"
  kill $app; wait $app 2>/dev/null || true
fi
# Your own images: the Train tab previewing a folder of four classes made from the sample photos (last layer
# only from large_1.0 at 96 pixels, as a user's last form would be in the settings file).
if [[ $only == *preview* ]]; then
  set_dir="$tmp/sample classes"
  mkdir -p "$set_dir/animals" "$set_dir/fruit" "$set_dir/people" "$set_dir/places and things"
  cp test_images/{butterfly,raccoon,squirrel}.jpg "$set_dir/animals/"
  cp test_images/{apple,orange}.jpg "$set_dir/fruit/"
  cp test_images/man_camera.png test_images/woman_{astronaut,grace_hopper}.jpg "$set_dir/people/"
  cp test_images/{castle_palace,cup_coffee,rocket}.jpg test_images/rose.png "$set_dir/places and things/"
  cp test_images/SOURCES.md "$set_dir/"
  mkdir -p "$XDG_CONFIG_HOME/mobilenetv3-studio"
  printf '{"tab":"Train","train":{"source":"Images","images_dir":"%s","image_size":"96","start_from":"%s","freeze_backbone":true,"epochs":"10","batch":"32","schedule":"Cosine"}}' \
    "$set_dir" "$PWD/trained_models/mobilenetv3_large_1.0.safetensors" >"$XDG_CONFIG_HOME/mobilenetv3-studio/settings.json"
  shoot train own_images_preview.png 3
  rm "$XDG_CONFIG_HOME/mobilenetv3-studio/settings.json"
fi
echo "screenshots in $out"
