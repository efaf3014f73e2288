#!/usr/bin/env bash
# Soak test (not run in CI): runs the release agent on the bundled photos, looping at a fixed
# rate, against Debian's mosquitto on a free loopback port for a chosen time; prints its
# resident memory every interval, then the growth.
#
#   scripts/soak.sh [minutes=10] [interval_s=10] [fps=5]
#
# Build first: cargo build --release
set -euo pipefail
minutes=${1:-10}; interval=${2:-10}; fps=${3:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/edge-agent"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { echo "needs mosquitto" >&2; exit 1; }
work=$(mktemp -d)
agent=""; broker=""
cleanup() {
  # stop the agent first and wait for it: it drains into the state folder we then delete
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  [ -n "$broker" ] && kill "$broker" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/m.conf"
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$work/m.conf" >/dev/null 2>&1 & broker=$!
cat > "$work/agent.toml" <<TOML
[agent]
device_id = "soak"
state_dir = "$work/state"
stats_interval_secs = 10
[mqtt]
port = $port
[pipelines.objects]
source = { type = "images", path = "$root/tests/fixtures/images", fps = $fps, loop = true }
stages = [{ type = "detect", model = "nanodet" }]
[pipelines.faces]
source = { type = "images", path = "$root/tests/fixtures/images", fps = $fps, loop = true }
stages = [{ type = "detect", model = "blazeface" }]
TOML
sleep 0.5
RUST_LOG=warn "$bin" --models-dir "$root/models" run --config "$work/agent.toml" & agent=$!
end=$(( $(date +%s) + minutes * 60 ))
first=""
printf '%8s %10s\n' "elapsed" "rss_kib"
start=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
  sleep "$interval"
  kill -0 "$agent" 2>/dev/null || { echo "the agent exited; see its log above" >&2; exit 1; }
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
  [ -n "$first" ] || first=$rss
  printf '%7ss %10s\n' "$(( $(date +%s) - start ))" "$rss"
done
echo "rss growth: $(( rss - first )) KiB over ${minutes} min (first sample ${first} KiB, last ${rss} KiB)"
