#!/usr/bin/env bash
# The ARM part of CI. Builds the agent and its tests for aarch64 against glibc 2.17 with
# cargo-zigbuild (the build that runs on Pi OS Bullseye and JetPack 4/5 too) and runs the
# unit tests under qemu (Cortex-A76). Checks which int8 kernel each layer runs on with and
# without the dot product and that the aarch64 int8 detector gives the x86 build's answers,
# that the aarch64 Whisper transcribes a sentence, builds armv7 (while qemu transcribes), checks each binary's newest GLIBC symbol and packages both as .deb.
# Needs what .ci/run installs for ARM and a native debug build in the same target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
a64=aarch64-unknown-linux-gnu
arm=armv7-unknown-linux-gnueabihf
glibc=2.17
qemu="qemu-aarch64 -cpu cortex-a76"
step() { echo "== $* ($(date +%T))"; }

step "aarch64 (glibc $glibc): build and unit tests under qemu"
# One invocation builds the unit tests and the binary (an integration test needs it) with the
# same features; a separate `build --bin` would resolve features without the dev-dependencies
# and compile tract and the rest once more.
# the integration test's ARM binary starts the ARM agent through qemu (no binfmt_misc here)
EDGE_AGENT_TEST_RUNNER="$qemu" cargo-zigbuild test --target $a64.$glibc --lib --test config_errors

step "aarch64: Whisper int8 transcribes a sentence (in the background)"
wav=tests/fixtures/audio/sentences/02-en-gb-x-rp.wav
$qemu "$target_dir/$a64/debug/edge-agent" transcribe "$wav" > "$target_dir/transcript-a64.json" 2> "$target_dir/transcript-a64.log" &
whisper=$!

step "aarch64: int8 kernels per layer on Cortex-A76 (dot product) and A72 (without); detections equal x86's"
scripts/arm-kernels.sh "$target_dir/$a64/debug/edge-agent" "$target_dir/debug/edge-agent"

# Nothing runs the armv7 binary here, so the `ci-build` profile leaves its dependencies
# unoptimised: it proves the target compiles and links in a third of the time.
step "armv7 (glibc $glibc): build"
cargo-zigbuild build --profile ci-build --target $arm.$glibc --bin edge-agent

step "aarch64: wait for the transcript"
wait $whisper || { cat "$target_dir/transcript-a64.log"; exit 1; }
text=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["text"])' "$target_dir/transcript-a64.json")
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

step "binaries: newest GLIBC symbol at most $glibc"
for bin in "$target_dir/$a64/debug/edge-agent" "$target_dir/$arm/ci-build/edge-agent"; do
  newest=$(readelf --dyn-syms -W "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -1)
  echo "$bin: $newest, $(du -h "$bin" | cut -f1) (unstripped debug build)"
  [ "$(printf '%s\n' "GLIBC_$glibc" "$newest" | sort -V | tail -1)" = "GLIBC_$glibc" ]
done

step "packages"
for pair in arm64:$a64/debug armhf:$arm/ci-build; do
  deb=$(DEB_COMPRESSION=gzip scripts/make-deb.sh --arch "${pair%%:*}" --binary "$target_dir/${pair#*:}/edge-agent" --out "$target_dir/deb")
  echo "$deb"
  deb=${deb%% *}
  contents=$(dpkg-deb -c "$deb")
  grep -q './usr/bin/edge-agent$' <<< "$contents"
  grep -q './lib/systemd/system/edge-agent.service$' <<< "$contents"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "${pair%%:*}" ]
  dpkg-deb -f "$deb" Depends | grep -q "libc6 (>= $glibc)"
done
step "done"
