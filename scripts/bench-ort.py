"""The onnxruntime side of `edge-agent bench`: times one ONNX file on raw inputs.

Argument: one JSON object {model, inputs: [{file, dtype, shape}], threads, runs, warmup}, the
inputs in the graph's order. Prints one JSON object {median_ms, p90_ms, load_ms, version}.
The inputs are the bytes the Rust side fed tract.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

a = json.loads(sys.argv[1])
opts = ort.SessionOptions()
opts.intra_op_num_threads = a["threads"]
opts.inter_op_num_threads = 1
opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
t0 = time.perf_counter()
session = ort.InferenceSession(a["model"], opts, providers=["CPUExecutionProvider"])
load_ms = (time.perf_counter() - t0) * 1e3
feed = {
    spec.name: np.fromfile(i["file"], dtype=i["dtype"]).reshape(i["shape"])
    for spec, i in zip(session.get_inputs(), a["inputs"])
}
for _ in range(a["warmup"]):
    session.run(None, feed)
times = []
for _ in range(a["runs"]):
    t0 = time.perf_counter()
    session.run(None, feed)
    times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print(json.dumps({
    "median_ms": float(np.median(times)),
    "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
    "load_ms": load_ms,
    "version": ort.__version__,
}))
