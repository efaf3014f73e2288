#!/usr/bin/env bash
# Instructions an aarch64 core executes per image, per vision model and precision: the
# reproducible stand-in for a board's speed when no board is here. Each count comes from
# qemu-aarch64 with a TCG plugin (scripts/qemu-insn-count.c, built here with gcc) that
# counts every guest instruction; the cost of one image is the count for 4 copies of a photo
# minus the count for 1, over 3, so loading, kernel timing at load and start-up cancel out.
# What is counted per image: decoding the photo, preprocessing, the inference and decoding its
# outputs (the same work for both precisions, except the inference).
#
#   scripts/arm-insns.sh AARCH64_EDGE_AGENT [CPU=cortex-a76]
#
# Instructions are not time: a dot-product instruction does 16 multiply-adds, a scalar one 1,
# and memory stalls are not counted. Read the table as the work each path asks of the core.
# onnxruntime is not in the table: its aarch64 wheel needs an aarch64 Python, which qemu-user
# alone cannot give this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?aarch64 edge-agent binary}
cpu=${2:-cortex-a76}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -shared -fPIC -O2 -fvisibility=hidden -o "$work/libinsncount.so" scripts/qemu-insn-count.c
photo=tests/fixtures/images/chelsea.jpg
count() { # count ARGS... -> instructions executed
  qemu-aarch64 -cpu "$cpu" -plugin "$work/libinsncount.so" -d plugin -D "$work/log" "$bin" "$@" > /dev/null
  sed -n 's/^insns //p' "$work/log" | tail -1
}
per_image() { # per_image COMMAND ARGS... -> instructions per extra image
  local one four
  one=$(count "$@" "$photo")
  four=$(count "$@" "$photo" "$photo" "$photo" "$photo")
  echo $(((four - one) / 3))
}
printf '| model (%s) | fp32 Minsns/image | int8 Minsns/image | int8 / fp32 |\n|---|---|---|---|\n' "$cpu"
for spec in "nanodet:detect --no-tiling --model nanodet" "blazeface:detect --no-tiling --model blazeface" \
            "efficientnet-lite0:classify --model efficientnet-lite0"; do
  name=${spec%%:*}; read -r -a cmd <<<"${spec#*:}"
  fp32=$(per_image "${cmd[@]}" --precision fp32)
  int8=$(per_image "${cmd[@]}" --precision int8)
  awk -v n="$name" -v f="$fp32" -v i="$int8" 'BEGIN { printf "| %s | %.1f | %.1f | %.2f |\n", n, f / 1e6, i / 1e6, i / f }'
done
