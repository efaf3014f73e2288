#!/usr/bin/env bash
# Writes the labelled image folders the head-training tests use, from data that ship inside
# PyPI packages (no download at test time):
#   tests/fixtures/heads/digits/<0..9>/     scikit-learn load_digits: 8x8 greys, 20 per class,
#                                           scaled x4 (nearest) to 32x32 PNG
#   tests/fixtures/heads/faces/{face,other}/ scikit-image lfw_subset: 25x25 greys, 40 of each
# Deterministic: the first images of each class, in dataset order.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
venv=${VENV:-$here/.venv-classify}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/models/requirements-classify.txt"
fi
out="$root/tests/fixtures/heads"
rm -rf "$out"
"$venv/bin/python" - "$out" <<'PY'
import pathlib, sys
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
import skimage.data

out = pathlib.Path(sys.argv[1])
d = load_digits()
for label in range(10):
    idx = np.flatnonzero(d.target == label)[:20]
    folder = out / "digits" / str(label)
    folder.mkdir(parents=True)
    for i in idx:
        grey = (255 - d.images[i] * 255 / 16).clip(0, 255).astype(np.uint8)  # dark ink on white
        Image.fromarray(grey).resize((32, 32), Image.NEAREST).save(folder / f"{i:04d}.png", optimize=True)
faces = skimage.data.lfw_subset()  # 100 faces, then 100 non-faces, 25x25 in [0, 1]
for name, block in (("face", faces[:40]), ("other", faces[100:140])):
    folder = out / "faces" / name
    folder.mkdir(parents=True)
    for i, f in enumerate(block):
        Image.fromarray((f * 255).astype(np.uint8)).save(folder / f"{i:03d}.png", optimize=True)
PY
find "$out" -name '*.png' | wc -l
du -sh "$out"
