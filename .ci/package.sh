#!/usr/bin/env bash
# Builds the Debian package into target/debian/: the release binary, its shell completions and manual pages
# (generated from the binary's own clap definitions), the launcher, the icons, the bundled models and photos.
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"

# cargo-deb, built once into the clone's target folder (nothing is cached outside the clone).
tools="$PWD/target/tools"
if ! "$tools/bin/cargo-deb" --version >/dev/null 2>&1; then
  echo "building cargo-deb (once, about a minute and a half)" >&2
  cargo install --quiet --locked cargo-deb --version 3.8.0 --root "$tools" >&2
fi
# dpkg-shlibdeps (for Depends: $auto) and strip.
for p in dpkg-dev binutils; do
  dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done

cargo build --release --quiet
bin="$target/release/mobilenetv3"
assets="$target/release/deb-assets"
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
"$bin" completions bash >"$assets/completions/mobilenetv3.bash"
"$bin" completions zsh >"$assets/completions/_mobilenetv3"
"$bin" completions fish >"$assets/completions/mobilenetv3.fish"
"$bin" man "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1

"$tools/bin/cargo-deb" --no-build --quiet >&2
deb=$(ls -t "$target"/debian/mobilenetv3-studio_*.deb | head -1)
echo "$deb ($(du -h "$deb" | cut -f1))" >&2
echo "$deb"
