"""Build models/nanodet-m-416/{nanodet-m-416.fp32.onnx,nanodet-m-416.int8.onnx} from the TF.js weights.

Usage: nanodet.py TFJS_MODEL_JSON OUT_DIR
"""
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

import calibration
import graph

MEAN = np.array([103.53, 116.28, 123.675], dtype=np.float32)  # BGR
STD = np.array([57.375, 57.12, 58.395], dtype=np.float32)
SIZE = 416
# tf2onnx output name -> ours (stride 8/16/32 class scores, then box distributions)
OUTPUTS = {"Identity:0": "cls_8", "Identity_1:0": "cls_16", "Identity_2:0": "cls_32",
           "Identity_3:0": "reg_8", "Identity_4:0": "reg_16", "Identity_5:0": "reg_32"}


def preprocess(img):
    x = calibration.letterbox(img, SIZE, fill=0.0)[:, :, ::-1]  # RGB -> BGR
    pad = x.sum(axis=2) == 0.0
    x = (x - MEAN) / STD
    x[pad] = 0.0  # padding is the mean colour, i.e. 0 after normalisation (as in the agent)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, input_name):
        self.it = ({input_name: preprocess(i)} for i in calibration.images())

    def get_next(self):
        return next(self.it, None)


def main(src, out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = pathlib.Path(tmp) / "raw.onnx"
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tfjs", src, "--output", str(raw),
                        "--opset", "13"], check=True, capture_output=True)
        m = onnx.load(raw)
        graph.rename_tensor(m, "input_1:0", "input")
        for old, new in OUTPUTS.items():
            graph.rename_tensor(m, old, new)
        out_order = sorted(m.graph.output, key=lambda o: list(OUTPUTS.values()).index(o.name))
        del m.graph.output[:]
        m.graph.output.extend(out_order)
        renamed = pathlib.Path(tmp) / "renamed.onnx"
        onnx.save(m, renamed)
        folded_path = pathlib.Path(tmp) / "folded.onnx"
        quant_pre_process(str(renamed), str(folded_path), skip_symbolic_shape=False)
        m = onnx.load(folded_path)
        n = graph.fold_pads(m)
        print(f"folded {n} Pad nodes into Conv/MaxPool", file=sys.stderr)
        fp32 = out / "nanodet-m-416.fp32.onnx"
        onnx.save(m, fp32)
    # The class scores leave the graph through a Sigmoid. Quantizing its output clips every
    # score at the largest one seen in calibration (about 0.6 here), so the Sigmoids stay fp32.
    sigmoids = [n.name for n in onnx.load(fp32).graph.node if n.op_type == "Sigmoid"]
    quantize_static(str(fp32), str(out / "nanodet-m-416.int8.onnx"), Reader("input"),
                    quant_format=QuantFormat.QDQ, per_channel=True, nodes_to_exclude=sigmoids,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


if __name__ == "__main__":
    main(*sys.argv[1:])
