#!/usr/bin/env python3
"""Writes tests/fixtures/models/maxpool-stride-0.onnx: a one-node graph (MaxPool with a stride
of 0 on NanoDet's input) that panics tract 0.23.9 while it types the graph (a division by zero
in its padding code). The update tests push it as a signed model: the agent must reject it and
keep serving, not lose its updates thread. Needs the `onnx` package (any venv of scripts/)."""
import os
import onnx
from onnx import TensorProto, helper

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "..", "tests", "fixtures", "models", "maxpool-stride-0.onnx")
x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 416, 416])
y = helper.make_tensor_value_info("cls_8", TensorProto.FLOAT, None)
node = helper.make_node("MaxPool", ["input"], ["cls_8"], kernel_shape=[2, 2], strides=[0, 0])
graph = helper.make_graph([node], "maxpool_stride0", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 7
onnx.save(model, out)
print(out)
