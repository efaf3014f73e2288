"""Calibration images for static int8 quantization.

Deliberately disjoint from the test fixtures (tests/fixtures/images): photos shipped by
scikit-learn (china, flower) and scikit-image (textures, coins, microscopy, hubble), the
second view of the stereo motorcycle pair is *not* used because its twin is a fixture.
Each photo also contributes random crops and flips so that object-sized regions, not only
whole scenes, set the activation ranges. A mosaic of the LFW faces (scikit-image) gives the
face detector faces to calibrate on.
"""
import pathlib

import numpy as np
from PIL import Image

import skimage
import sklearn

SK = pathlib.Path(skimage.__file__).parent / "data"
SKL = pathlib.Path(sklearn.__file__).parent / "datasets" / "images"

PHOTOS = [SKL / "china.jpg", SKL / "flower.jpg"] + [
    SK / n for n in ["brick.png", "grass.png", "gravel.png", "coins.png", "hubble_deep_field.jpg",
                     "ihc.png", "retina.jpg", "color.png", "page.png", "moon.png", "cell.png"]
]


def _rgb(path):
    return Image.open(path).convert("RGB")


def face_mosaics(n=4, seed=0):
    faces = np.load(SK / "lfw_subset.npy")[:100]  # first 100 are faces, 25x25 grey in [0,1]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = rng.integers(1, 4)
        tile = 400 // k
        canvas = np.full((400, 400), 0.5, dtype=np.float32)
        for r in range(k):
            for c in range(k):
                f = faces[rng.integers(0, len(faces))]
                img = Image.fromarray((f * 255).astype(np.uint8)).resize((tile, tile), Image.BILINEAR)
                canvas[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = np.asarray(img) / 255.0
        out.append(Image.fromarray((canvas * 255).astype(np.uint8)).convert("RGB"))
    return out


def images(crops_per_photo=3, seed=0):
    """Yield PIL RGB images: each photo, some random crops and flips, and face mosaics."""
    rng = np.random.default_rng(seed)
    for p in PHOTOS:
        img = _rgb(p)
        yield img
        w, h = img.size
        for _ in range(crops_per_photo):
            s = rng.uniform(0.3, 0.7)
            cw, ch = int(w * s), int(h * s)
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            crop = img.crop((x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            yield crop
    yield from face_mosaics()


def letterbox(img, size, fill):
    """Resize keeping aspect ratio into a size x size canvas, centred; same rule as the agent."""
    w, h = img.size
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.empty((size, size, 3), dtype=np.float32)
    canvas[:] = fill
    x0, y0 = (size - nw) // 2, (size - nh) // 2
    canvas[y0:y0 + nh, x0:x0 + nw] = np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.float32)
    return canvas
