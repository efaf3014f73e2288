"""The onnxruntime side of `edge-agent bench`: times one ONNX file on raw inputs, on request.

Argument: one JSON object {model, inputs: [{file, dtype, shape}], threads, warmup}, the inputs
in the graph's order; they are the bytes the Rust side fed tract. Speaks the benchmark's
protocol (agent/src/bench/rounds.rs): prints {load_ms, version} once loaded and warm; for each
line N on its input, times N runs and prints {times: [ms, ...]}; at the end of its input prints
{peak_rss_mb} and exits.
"""
import json
import resource
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
print(json.dumps({"load_ms": load_ms, "version": ort.__version__}), flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"times": times}), flush=True)
# ru_maxrss is in KiB on Linux
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
