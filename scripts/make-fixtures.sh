#!/usr/bin/env bash
# Exports the test photos (real photos with known content) from the Python packages that ship
# them into tests/fixtures/images/. Run once; the output is committed.
#   scikit-image: astronaut, chelsea (a cat), coffee, rocket, camera (a cameraman),
#                 motorcycle (left view of the stereo pair)
#   matplotlib:   grace_hopper
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$here/.venv}
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r "$here/models/requirements.txt"; }
out="$here/../tests/fixtures/images"
mkdir -p "$out"
"$venv/bin/python" - "$out" <<'PY'
import pathlib, sys
import matplotlib, skimage
from PIL import Image
out = pathlib.Path(sys.argv[1])
sk = pathlib.Path(skimage.__file__).parent / "data"
mpl = pathlib.Path(matplotlib.get_data_path()) / "sample_data"
photos = {"astronaut": sk / "astronaut.png", "chelsea": sk / "chelsea.png", "coffee": sk / "coffee.png",
          "rocket": sk / "rocket.jpg", "camera": sk / "camera.png", "motorcycle": sk / "motorcycle_left.png",
          "grace_hopper": mpl / "grace_hopper.jpg"}
for name, src in photos.items():
    Image.open(src).convert("RGB").save(out / f"{name}.jpg", quality=92)
    print(name, Image.open(out / f"{name}.jpg").size)
PY
