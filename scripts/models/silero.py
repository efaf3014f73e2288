"""Silero VAD for tract: the package's OpenVINO-flavoured 16 kHz graph with unique node names.

    python silero.py silero_vad_openvino_16k.onnx OUT.onnx

The graph, its weights and its inputs/outputs are unchanged; only node names are rewritten:
15 nodes share the name `F0::anon`, which tract 0.23 refuses ("duplicate name for node").
"""
import collections
import sys

import onnx


def main():
    model = onnx.load(sys.argv[1])
    seen = collections.Counter()
    for node in model.graph.node:
        seen[node.name] += 1
        if seen[node.name] > 1 or not node.name:
            node.name = f"{node.name or node.op_type}_{seen[node.name]}"
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)
    onnx.save(model, sys.argv[2])


if __name__ == "__main__":
    main()
