#!/usr/bin/env bash
# The ARM part of CI: builds the agent and its tests for aarch64 with Debian's cross linker,
# runs the unit tests under qemu (Cortex-A76), checks that the aarch64 int8 detector gives
# the x86 build's answers and that the aarch64 Whisper transcribes a sentence, builds armv7,
# reports each binary's newest GLIBC symbol, and packages both as .deb (contents checked).
# Needs what .ci/run installs with ARM=1 and a native debug build in the same target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
a64=aarch64-unknown-linux-gnu
arm=armv7-unknown-linux-gnueabihf
qemu="qemu-aarch64 -cpu cortex-a76"
step() { echo "== $* ($(date +%T))"; }

step "aarch64: build and unit tests under qemu"
cargo test --target $a64 --lib

step "aarch64: int8 NanoDet answers equal x86's"
photos=(tests/fixtures/images/{chelsea,grace_hopper,motorcycle}.jpg)
"$target_dir/debug/edge-agent" detect --no-tiling "${photos[@]}" > "$target_dir/detect-x86.jsonl"
$qemu "$target_dir/$a64/debug/edge-agent" detect --no-tiling "${photos[@]}" > "$target_dir/detect-a64.jsonl"
python3 scripts/compare-detections.py "$target_dir/detect-x86.jsonl" "$target_dir/detect-a64.jsonl"

step "aarch64: Whisper int8 transcribes a sentence"
wav=tests/fixtures/audio/sentences/02-en-gb-x-rp.wav
text=$($qemu "$target_dir/$a64/debug/edge-agent" transcribe "$wav" | python3 -c 'import json,sys; print(json.load(sys.stdin)["text"])')
echo "heard: $text"
python3 - "$text" <<'PY'
import re, sys
words = lambda s: re.findall(r"[a-z']+", s.lower())
ref, hyp = words("Please turn off the lights in the kitchen."), words(sys.argv[1])
d = [[i + j if i * j == 0 else 0 for j in range(len(hyp) + 1)] for i in range(len(ref) + 1)]
for i in range(1, len(ref) + 1):
    for j in range(1, len(hyp) + 1):
        d[i][j] = min(d[i-1][j] + 1, d[i][j-1] + 1, d[i-1][j-1] + (ref[i-1] != hyp[j-1]))
wer = d[-1][-1] / len(ref)
print(f"word error rate {wer:.2f}")
sys.exit(0 if wer <= 0.3 else 1)
PY

step "armv7: build"
cargo build --target $arm --bin edge-agent

step "binaries: newest GLIBC symbol"
for t in $a64 $arm; do
  bin="$target_dir/$t/debug/edge-agent"
  echo "$t: $(readelf --dyn-syms -W "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -1), $(du -h "$bin" | cut -f1) (debug)"
done

step "packages"
for pair in arm64:$a64 armhf:$arm; do
  deb=$(DEB_COMPRESSION=gzip scripts/make-deb.sh --arch "${pair%%:*}" --binary "$target_dir/${pair#*:}/debug/edge-agent" --out "$target_dir/deb")
  echo "$deb"
  deb=${deb%% *}
  dpkg-deb -c "$deb" | grep -q './usr/bin/edge-agent$' && dpkg-deb -c "$deb" | grep -q './lib/systemd/system/edge-agent.service$'
  [ "$(dpkg-deb -f "$deb" Architecture)" = "${pair%%:*}" ]
done
step "done"
