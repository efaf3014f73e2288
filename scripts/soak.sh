#!/usr/bin/env bash
# Soak (not run in CI): the release agent with four pipelines (NanoDet and BlazeFace on the
# bundled photos, an EfficientNet-Lite0 classifier with a pushable head slot, and Silero VAD +
# Whisper on a WAV read aloud in real time, looping) against Debian's mosquitto, for a chosen
# time. Every `push_every` minutes a newly trained head is pushed to the classifier's slot
# (signed, over MQTT, as an operator would). Every `interval` seconds it prints resident
# memory, open file descriptors and threads; at the end, the growth after warm-up.
#
#   scripts/soak.sh [minutes=60] [interval_s=30] [push_every_min=10] [warmup_min=5]
#
# Build first: cargo build --release (or EDGE_AGENT_BIN=path/to/edge-agent)
set -euo pipefail
minutes=${1:-60}; interval=${2:-30}; push_every=${3:-10}; warmup=${4:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin=${EDGE_AGENT_BIN:-$target/release/edge-agent}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$mosq" ] || { echo "needs mosquitto" >&2; exit 1; }
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
"$mosq" -c "$work/m.conf" >/dev/null 2>&1 & broker=$!
ea() { "$bin" --models-dir "$root/models" "$@"; }
pub=$(ea keygen --out "$work/ops" 2>/dev/null | tail -1)
images="$root/tests/fixtures/images"
cat > "$work/agent.toml" <<TOML
[agent]
device_id = "soak"
state_dir = "$work/state"
stats_interval_secs = 10
[mqtt]
port = $port
[updates]
trusted_keys = ["$pub"]
[pipelines.objects]
source = { type = "images", path = "$images", fps = 0.1, loop = true }
stages = [{ type = "detect", model = "nanodet" }]
[pipelines.faces]
source = { type = "images", path = "$images", fps = 1, loop = true }
stages = [{ type = "detect", model = "blazeface" }]
[pipelines.kinds]
source = { type = "images", path = "$images", fps = 0.5, loop = true }
stages = [{ type = "classify", slot = "faces" }]
[pipelines.speech]
source = { type = "wav", path = "$root/tests/fixtures/audio/silence-speech-silence.wav", realtime = true, loop = true }
stages = [{ type = "vad" }, { type = "transcribe", precision = "int8" }]
TOML
sleep 0.5
RUST_LOG=warn "$bin" --models-dir "$root/models" run --config "$work/agent.toml" & agent=$!
start=$(date +%s); end=$(( start + minutes * 60 )); next_push=$(( start + push_every * 60 ))
pushes=0; warm=""; first=""
printf '%8s %10s %5s %8s %7s\n' elapsed rss_kib fds threads pushes
while [ "$(date +%s)" -lt "$end" ]; do
  sleep "$interval"
  kill -0 "$agent" 2>/dev/null || { echo "the agent exited; see its log above" >&2; exit 1; }
  now=$(date +%s)
  if [ "$now" -ge "$next_push" ]; then
    pushes=$(( pushes + 1 )); next_push=$(( next_push + push_every * 60 ))
    ea head train --data "$root/tests/fixtures/heads/digits" --out "$work/head.safetensors" --name faces \
      --version "$pushes" >/dev/null 2>&1
    if ea push --device soak --port "$port" --key "$work/ops.secret" --device-key "$work/state/device.pub" --head "$work/head.safetensors" --slot faces \
      2>/dev/null | grep -q '"active"'; then :; else echo "push $pushes did not become active" >&2; fi
  fi
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
  threads=$(awk '/Threads/ {print $2}' "/proc/$agent/status")
  fds=$(ls "/proc/$agent/fd" | wc -l)
  [ -n "$first" ] || first=$rss
  [ -n "$warm" ] || { [ $(( now - start )) -ge $(( warmup * 60 )) ] && warm=$rss; } || true
  printf '%7ss %10s %5s %8s %7s\n' "$(( now - start ))" "$rss" "$fds" "$threads" "$pushes"
done
echo "rss: first sample ${first} KiB, after ${warmup} min warm-up ${warm:-?} KiB, end ${rss} KiB"
[ -n "$warm" ] && python3 -c "print(f'growth after warm-up: {100*($rss-$warm)/$warm:+.2f} %')"
