"""Timing ONNX models in a fresh process that loads only onnxruntime: as deployed, and without TensorFlow's
(or another session's) idle threads competing for the cores."""
from __future__ import annotations

import json
import subprocess
import sys

from tfprune.export.runtime import FLUSH_DENORMALS

# Run with `python -c` in a bare process (no tfprune, no TensorFlow), so it repeats speed.latency_ms's loop.
_ORT_TIMER = """
import json, statistics, sys, time
import numpy as np, onnxruntime as ort
path, feeds_path, runs, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.add_session_config_entry(*sys.argv[5:7])
sess = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
feeds = np.load(feeds_path)
result = {}
for batch, count, warmup in (("1", runs, 5), ("32", max(10, runs // 5), 2)):
    feed = {i.name: feeds[i.name + "_" + batch] for i in sess.get_inputs()}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    result[batch] = {"p50": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))], "runs": count}
print(json.dumps(result))
"""


def ort_latency(path: str, feeds_path: str, runs: int, threads: int) -> dict:
    """Time an ONNX model in a fresh process that loads only onnxruntime: as deployed, and without
    TensorFlow's (or another session's) idle threads competing for the cores."""
    out = subprocess.run([sys.executable, "-c", _ORT_TIMER, path, feeds_path, str(runs), str(threads),
                          *FLUSH_DENORMALS], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
