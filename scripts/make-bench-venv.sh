#!/usr/bin/env bash
# The reference runtime for `edge-agent bench`: onnxruntime from PyPI in scripts/.venv-bench
# (git-ignored). Without it the benchmark measures tract alone.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/pip install -q -r models/requirements-bench.txt
.venv-bench/bin/python -c 'import onnxruntime; print("onnxruntime", onnxruntime.__version__)'
