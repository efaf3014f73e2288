#!/usr/bin/env bash
# Coverage-guided fuzzing of what the agent reads from the network and from disk (libFuzzer
# through cargo-fuzz; nightly for the fuzz crate only). Seeds come from the project's fixtures.
#
#   scripts/fuzz.sh TARGET|all [seconds=60]
#
# Targets: update_traffic head_file model_manifest command config wav image outbox_segment
# stream_splitter. A crash leaves its input in agent/fuzz/artifacts/TARGET/; add it as a
# regression test. Each run prints libFuzzer's final line (executions, coverage).
set -euo pipefail
which=${1:?target or all}; secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/agent/fuzz"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}-fuzz}
targets=(update_traffic head_file model_manifest command config wav image outbox_segment stream_splitter)
[ "$which" = all ] || targets=("$which")
command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }

seed() { # target: fill agent/fuzz/corpus/TARGET from the fixtures (kept between runs)
  local d="$fuzz/corpus/$1"; mkdir -p "$d"
  case $1 in
    image) cp "$root"/tests/fixtures/images/chelsea.jpg "$d/";
           python3 -c "import sys; sys.stdout.buffer.write(b'P6\n4 3\n255\n' + bytes(range(36)))" > "$d/tiny.ppm";;
    stream_splitter) { printf '\0'; cat "$root/tests/fixtures/images/chelsea.jpg" "$root/tests/fixtures/images/chelsea.jpg"; } > "$d/mjpeg";
           { printf '\1'; head -c 72 /dev/zero; } > "$d/raw";;
    wav) for f in silence stereo-44k; do head -c 4096 "$root/tests/fixtures/audio/$f.wav" > "$d/$f.wav"; done;;
    head_file) cp "$root"/models/efficientnet-lite0/heads/*.safetensors "$d/" 2>/dev/null || true;;
    model_manifest) for m in "$root"/models/*/manifest.toml; do cp "$m" "$d/$(basename "$(dirname "$m")").toml"; done;;
    config) cp "$root/systemd/edge-agent.toml" "$d/";;
    command) printf '{"id":"1","command":"ping"}' > "$d/ping"; printf '{"id":"2","command":"stats"}' > "$d/stats";;
    update_traffic) printf '\0{"op":"chunk","id":"t1","offset":0,"total":48,"data":"bm90"}\xff\0{"op":"rollback","id":"r","order":"{}","signature":"AA=="}' > "$d/chunks";;
    outbox_segment) printf '\xea\x08\x00\x00\x00\x00\x00\x00\x00' > "$d/short";;
  esac
}

cd "$fuzz"
cargo +nightly fuzz build --fuzz-dir . -s none -a "${targets[@]:0:1}" >/dev/null 2>&1 || true
status=0
for t in "${targets[@]}"; do
  seed "$t"
  log=$(mktemp)
  if cargo +nightly fuzz run --fuzz-dir . -s none -a "$t" "corpus/$t" -- \
       -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    printf '%-16s ok   %10s runs  %s  corpus %s files\n' "$t" "${execs:-?}" "${cov:-}" "$(ls "corpus/$t" | wc -l)"
  else
    printf '%-16s FAIL (see below; the input is in agent/fuzz/artifacts/%s/)\n' "$t" "$t"
    grep -v '^#' "$log" | tail -40
    status=1
  fi
  rm -f "$log"
done
exit $status
