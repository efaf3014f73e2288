#!/usr/bin/env bash
# Builds a Debian package from a built binary, with the same layout scripts/install.sh
# gives (one file list for both): binary, unit, default config (a conffile), models,
# demo samples, README and licenses. The libc6 dependency is read off the binary's own
# GLIBC symbol versions.
#
#   scripts/make-deb.sh --arch arm64 --binary target/aarch64-unknown-linux-gnu/release/edge-agent
#   scripts/make-deb.sh --arch armhf --binary target/armv7-unknown-linux-gnueabihf/release/edge-agent
#   (--out DIR, default target/deb; DEB_COMPRESSION=gzip for a quick test build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arch="" binary="" out="$root/target/deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 --arch arm64|armhf|amd64 --binary PATH [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -n "$arch" ] && [ -x "$binary" ] || { echo "usage: $0 --arch arm64|armhf|amd64 --binary PATH [--out DIR]" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
glibc=$(readelf --dyn-syms -W "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR="$stage" "$here/install.sh" --binary "$binary" --no-start >/dev/null
install -d "$stage/DEBIAN"
size=$(du -sk "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: edge-agent
Version: $version
Architecture: $arch
Maintainer: edge-agent developers <edge-agent@localhost>
Depends: libc6 (>= $glibc), libasound2
Installed-Size: $size
Section: misc
Priority: optional
Description: pretrained int8 models on camera frames and microphones, results over MQTT
 edge-agent runs object and face detection, image classification with
 replaceable heads, and speech transcription on ARM boards, and publishes the
 results as JSON over MQTT. It installs as a sandboxed systemd service.
CONTROL
echo /etc/edge-agent/config.toml > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable edge-agent.service >/dev/null
  systemctl restart edge-agent.service || echo "edge-agent did not start: journalctl -u edge-agent"
fi
SCRIPT
cat > "$stage/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl stop edge-agent.service || true
  [ "$1" = remove ] && systemctl disable edge-agent.service >/dev/null || true
fi
SCRIPT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm"
mkdir -p "$out"
deb="$out/edge-agent_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$stage" "$deb" >/dev/null
echo "$deb (libc6 >= $glibc, $(du -h "$deb" | cut -f1))"
