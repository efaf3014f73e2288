"""Build models/blazeface-128/{blazeface-128.fp32.onnx,blazeface-128.int8.onnx} from the barracuda ONNX.

Usage: blazeface.py FACE_DETECTION_FRONT_128x128_BARRACUDA_ONNX OUT_DIR

The raw file is opset 12 with ConstantOfShape nodes that tract rejects; converting to opset 13
and constant-folding fixes both. The four output-head convolutions stay fp32: quantizing them
collapses the score logits and every face disappears.
"""
import pathlib
import sys
import tempfile

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

import calibration
import graph

SIZE = 128
OUTPUTS = {"Identity:0": "scores_16", "Identity_1:0": "scores_8",
           "Identity_2:0": "boxes_16", "Identity_3:0": "boxes_8"}


def preprocess(img):
    x = calibration.letterbox(img, SIZE, fill=127.5)
    return (x / 127.5 - 1.0)[None].astype(np.float32)  # NHWC, RGB in [-1, 1]


class Reader(CalibrationDataReader):
    def __init__(self, input_name):
        self.it = ({input_name: preprocess(i)} for i in calibration.images())

    def get_next(self):
        return next(self.it, None)


def head_convs(m):
    """The Conv nearest to each graph output (walking producers back)."""
    producer = {o: n for n in m.graph.node for o in n.output}
    heads = []
    for out in m.graph.output:
        todo = [out.name]
        while todo:
            n = producer.get(todo.pop())
            if n is None:
                continue
            if n.op_type == "Conv":
                heads.append(n.name)
                break
            todo.extend(i for i in n.input if i in producer)
    return sorted(set(heads))


def main(src, out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = version_converter.convert_version(onnx.load(src), 13)
    graph.rename_tensor(m, "input:0", "input")
    for old, new in OUTPUTS.items():
        graph.rename_tensor(m, old, new)
    with tempfile.TemporaryDirectory() as tmp:
        p13 = pathlib.Path(tmp) / "opset13.onnx"
        onnx.save(m, p13)
        fp32 = out / "blazeface-128.fp32.onnx"
        quant_pre_process(str(p13), str(fp32))
    m = onnx.load(fp32)
    for n in m.graph.node:
        assert n.op_type != "ConstantOfShape", "constant folding left a ConstantOfShape"
    heads = head_convs(m)
    print("kept fp32:", heads, file=sys.stderr)
    assert len(heads) == 4, heads
    quantize_static(str(fp32), str(out / "blazeface-128.int8.onnx"), Reader("input"),
                    quant_format=QuantFormat.QDQ, per_channel=True, nodes_to_exclude=heads,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


if __name__ == "__main__":
    main(*sys.argv[1:])
