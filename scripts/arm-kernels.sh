#!/usr/bin/env bash
# Which integer kernel runs each int8 layer on ARM, checked under qemu for a core with the
# dot-product extension (Cortex-A76: Pi 5, RK3588, Orin's A78AE alike) and one without
# (Cortex-A72: Pi 4), and that both give the x86 build's detections.
#
#   scripts/arm-kernels.sh AARCH64_EDGE_AGENT [X86_EDGE_AGENT]
#
# Fails when a product kernel on the A76 is not a dot-product one, when the A72 is offered a
# dot-product kernel (it would fault) or falls to tract's generic loop, when a depthwise layer
# is not on NEON, or when the detections differ. Used by scripts/ci-arm.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
a64=${1:?aarch64 edge-agent binary}
x86=${2:-}
photos=(tests/fixtures/images/{chelsea,grace_hopper,motorcycle}.jpg)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for cpu in cortex-a76 cortex-a72; do
  for model in nanodet blazeface efficientnet-lite0; do
    qemu-aarch64 -cpu "$cpu" "$a64" models layers "$model" > "$out/$cpu-$model.jsonl"
  done
done
python3 - "$out" <<'PY'
import collections, json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
bad = []
def kernel(layer):
    info = layer["info"]
    m = re.search(r"(?:im2col \+ | on )([^,\s]+)", info)
    if m:
        return "product", m.group(1)
    m = re.search(r"(depthwise [^,]+|1×1 [^,]+)", info)
    if m:
        return m.group(1).split(" ", 1)[0], m.group(1)
    return "unknown", info
for cpu in ("cortex-a76", "cortex-a72"):
    for f in sorted(out.glob(f"{cpu}-*.jsonl")):
        model = f.stem[len(cpu) + 1:]
        counts = collections.Counter()
        for line in f.read_text().splitlines():
            layer = json.loads(line)
            k = kernel(layer) if layer["op"] in ("EdgeQConv", "EdgeQMatMul") else None
            if k is None:
                continue
            counts[k] += 1
            kind, name = k
            if kind == "product" and cpu == "cortex-a76" and "dot" not in name:
                bad.append(f"{cpu} {model} {layer['node']}: {name} is not a dot-product kernel")
            if kind == "product" and cpu == "cortex-a72" and ("dot" in name or "generic" in name):
                bad.append(f"{cpu} {model} {layer['node']}: {name} on a core without the dot product")
            if kind == "unknown" or kind == "1×1":
                bad.append(f"{cpu} {model} {layer['node']}: {name}")
            if kind == "depthwise" and "neon" not in name.lower():
                bad.append(f"{cpu} {model} {layer['node']}: depthwise on {name}")
        summary = ", ".join(f"{n} × {kind} {name}" for (kind, name), n in sorted(counts.items()))
        print(f"{cpu:<11} {model:<19} {summary}")
        if not counts:
            bad.append(f"{cpu} {model}: no integer layers at all")
for b in bad:
    print("FAIL", b)
sys.exit(1 if bad else 0)
PY
for cpu in cortex-a76 cortex-a72; do
  qemu-aarch64 -cpu "$cpu" "$a64" detect --no-tiling "${photos[@]}" > "$out/detect-$cpu.jsonl"
done
python3 scripts/compare-detections.py "$out/detect-cortex-a76.jsonl" "$out/detect-cortex-a72.jsonl"
if [ -n "$x86" ]; then
  "$x86" detect --no-tiling "${photos[@]}" > "$out/detect-x86.jsonl"
  python3 scripts/compare-detections.py "$out/detect-x86.jsonl" "$out/detect-cortex-a72.jsonl"
fi
echo "arm kernels: ok"
