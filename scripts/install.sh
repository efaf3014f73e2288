#!/usr/bin/env bash
# Installs edge-agent as a systemd service:
#   /usr/bin/edge-agent                      the binary (--binary, default target/release/edge-agent)
#   /usr/share/edge-agent/models/            the models (the large variants .gitignore lists only
#                                            with EDGE_AGENT_INSTALL_LARGE=1)
#   /usr/share/edge-agent/samples/           the demo's photos and recording
#   /lib/systemd/system/edge-agent.service   the sandboxed unit (dynamic user, StateDirectory=)
#   /etc/edge-agent/config.toml              the example config, only if there is none yet
#   /usr/share/doc/edge-agent/               README, licenses
# then enables and starts the service.
#
#   sudo scripts/install.sh [--binary PATH] [--no-start]
#   DESTDIR=/tmp/root scripts/install.sh --binary PATH   # into a scratch root: no systemctl
#
# The state directory (/var/lib/edge-agent) is created by systemd for the dynamic user.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
binary="$root/target/release/edge-agent"
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
dest=${DESTDIR:-}
[ -x "$binary" ] || { echo "no binary at $binary (cargo build --release, or --binary PATH)" >&2; exit 1; }

install -D -m 0755 "$binary" "$dest/usr/bin/edge-agent"
install -D -m 0644 "$root/systemd/edge-agent.service" "$dest/lib/systemd/system/edge-agent.service"
install -d -m 0755 "$dest/etc/edge-agent"
if [ -e "$dest/etc/edge-agent/config.toml" ]; then
  echo "keeping the existing $dest/etc/edge-agent/config.toml"
else
  install -m 0644 "$root/systemd/edge-agent.toml" "$dest/etc/edge-agent/config.toml"
fi

# models: every file of every model folder, except the large variants .gitignore lists that
# were not built (they are optional; the agent names the script that makes them)
mapfile -t ignored < <(sed -n 's|^models/||p' "$root/.gitignore")
models="$dest/usr/share/edge-agent/models"
rm -rf "$models"
(cd "$root/models" && find . -type f | sort) | while read -r f; do
  f=${f#./}
  skip=0
  for pattern in "${ignored[@]}"; do
    # shellcheck disable=SC2053  # the .gitignore line is a glob
    [[ $f == $pattern ]] && skip=1
  done
  [ "$skip" = 1 ] && [ "${EDGE_AGENT_INSTALL_LARGE:-0}" != 1 ] && continue
  install -D -m 0644 "$root/models/$f" "$models/$f"
done

samples="$dest/usr/share/edge-agent/samples"
install -d -m 0755 "$samples"
install -m 0644 "$root"/tests/fixtures/images/*.jpg "$samples/"
install -m 0644 "$root/tests/fixtures/audio/silence-speech-silence.wav" "$samples/speech.wav"

doc="$dest/usr/share/doc/edge-agent"
install -D -m 0644 "$root/README.md" "$doc/README.md"
for m in "$root"/models/*/; do
  name=$(basename "$m")
  for f in LICENSE NOTICE; do
    [ -f "$m/$f" ] && install -D -m 0644 "$m/$f" "$doc/models/$name/$f"
  done
done

if [ -z "$dest" ] && [ "$start" = 1 ] && command -v systemctl >/dev/null; then
  systemctl daemon-reload
  systemctl enable --now edge-agent.service
  systemctl --no-pager status edge-agent.service || true
else
  echo "installed under ${dest:-/}; start with: systemctl enable --now edge-agent"
fi
