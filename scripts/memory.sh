#!/usr/bin/env bash
# Memory (not run in CI): what each model costs the agent, and the demo's four pipelines
# together. Each row is one `edge-agent run` against Debian's mosquitto, its source looping
# over the bundled photos or recordings (unpaced, so every model keeps working) for a chosen
# time. Printed per row: the peak resident memory (the kernel's VmHWM, what
# `/usr/bin/time -v` reports as "Maximum resident set size"), the resident memory at the
# end, and of it the anonymous part (heap and stacks; the rest is the binary's own pages).
#
#   scripts/memory.sh [seconds=20]
#
# Build first: cargo build --release (or EDGE_AGENT_BIN=path/to/edge-agent)
set -euo pipefail
secs=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin=${EDGE_AGENT_BIN:-$target/release/edge-agent}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || { echo "needs mosquitto" >&2; exit 1; }
work=$(mktemp -d)
broker=""
trap '[ -n "$broker" ] && kill "$broker" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/m.conf"
"$mosq" -c "$work/m.conf" >/dev/null 2>&1 & broker=$!
images="$root/tests/fixtures/images"
audio="$root/tests/fixtures/audio"

objects='[pipelines.objects]
source = { type = "images", path = "'$images'", loop = true }
stages = [{ type = "detect", model = "nanodet" }]'
faces='[pipelines.faces]
source = { type = "images", path = "'$images'", loop = true }
stages = [{ type = "detect", model = "blazeface" }]'
labels='[pipelines.labels]
source = { type = "images", path = "'$images'", loop = true }
stages = [{ type = "classify", model = "efficientnet-lite0" }]'
# four sentences, a 20 s reading and speech between silences: every encoder window is used
mkdir "$work/speech"
for f in "$audio"/sentences/0[1-4]*.wav "$audio/reading.wav" "$audio/silence-speech-silence.wav"; do
  ln -s "$f" "$work/speech/"
done
speech='[pipelines.speech]
source = { type = "wav", path = "'$work/speech'", loop = true }
stages = [{ type = "vad" }, { type = "transcribe" }]'

measure() { # name, pipelines...
  local name=$1; shift
  { printf '[agent]\ndevice_id = "mem"\nstate_dir = "%s/state-%s"\n[mqtt]\nport = %s\n' "$work" "$name" "$port"
    printf '%s\n' "$@"; } > "$work/$name.toml"
  RUST_LOG=warn "$bin" --models-dir "$root/models" run --config "$work/$name.toml" & local pid=$!
  sleep "$secs"
  local status=/proc/$pid/status
  local hwm rss anon
  hwm=$(awk '/^VmHWM/ {print $2}' "$status"); rss=$(awk '/^VmRSS/ {print $2}' "$status")
  anon=$(awk '/^RssAnon/ {print $2}' "$status")
  kill -INT "$pid"; wait "$pid" || true
  awk -v n="$name" -v h="$hwm" -v r="$rss" -v a="$anon" \
    'BEGIN { printf "| %-34s | %7.1f | %7.1f | %7.1f |\n", n, h / 1024, r / 1024, a / 1024 }'
}

echo "$("$bin" --version), ${secs} s per row"
echo "| pipelines                          | peak MB | end MB  | anon MB |"
echo "|---|---|---|---|"
measure nanodet "$objects"
measure blazeface "$faces"
measure efficientnet-lite0 "$labels"
measure speech "$speech"
measure demo-four "$objects" "$faces" "$labels" "$speech"
