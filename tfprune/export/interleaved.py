"""Interleaved latency: every candidate timed in turn within each iteration, the order rotating (A B C, B C A,
C A B, ...), so that the load of a shared machine, which drifts over seconds, falls on all of them alike.
A candidate's speed-up is the median over iterations of the baseline's time / its time in the same
iteration: timed one after another, the same export measured 1.56x on a quiet run and 0.54x beside
another job.

This file imports neither tfprune nor TensorFlow: `ort_interleaved` runs it as a script in a bare process
that loads only ONNX Runtime, as deployed. Every session gets the same thread count and no spin-waiting, so
an idle session's threads do not take the cores from the one being timed.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time


def interleave(runners: dict, iterations: int, warmup: int = 2, clock=time.perf_counter) -> dict:
    """{name: [ms per iteration]}: each runner called once per iteration, in an order rotated by one each
    iteration, after `warmup` untimed rounds."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    times = {name: [] for name in names}
    for iteration in range(iterations):
        shift = iteration % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            runners[name]()
            times[name].append((clock() - start) * 1e3)
    return times


def summarize(times: dict, baseline: str) -> dict:
    """Per candidate: median and p90 ms, and the median of the per-iteration speed-ups over `baseline`."""
    result = {}
    for name, series in times.items():
        ordered = sorted(series)
        result[name] = {"p50_ms": statistics.median(series), "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
                        "speedup": statistics.median(b / t for b, t in zip(times[baseline], series)),
                        "iterations": len(series)}
    return result


def _ort_main(spec_path: str) -> None:
    """The bare process: spec {"models": {name: onnx path}, "inputs": npz path, "sets": {set: [feed prefixes]},
    "iterations": {set: n}, "threads": n, "baseline": name, "config": [[key, value], ...]}; prints
    {set: summarize(...)} as JSON."""
    import numpy as np
    import onnxruntime as ort

    with open(spec_path) as handle:
        spec = json.load(handle)
    sessions = {}
    for name, path in spec["models"].items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = spec["threads"]
        for key, value in spec["config"] + [["session.intra_op.allow_spinning", "0"]]:
            options.add_session_config_entry(key, value)
        sessions[name] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    arrays = np.load(spec["inputs"])
    dtypes = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
    result = {}
    def runner(sess, prefixes):
        feeds = [{i.name: arrays[f"{prefix}/{i.name}"].astype(dtypes[i.type]) for i in sess.get_inputs()}
                 for prefix in prefixes]
        return lambda: [sess.run(None, feed) for feed in feeds]

    for set_name, prefixes in spec["sets"].items():
        times = interleave({name: runner(sess, prefixes) for name, sess in sessions.items()},
                           spec["iterations"][set_name])
        result[set_name] = summarize(times, spec["baseline"])
    print(json.dumps(result))


def ort_interleaved(models: dict, inputs_path: str, sets: dict, iterations: dict, threads: int, baseline: str,
                    config: list, spec_path: str) -> dict:
    """Time ONNX `models` ({name: path}) interleaved on each input set, in a bare process; see `_ort_main`."""
    with open(spec_path, "w") as handle:
        json.dump({"models": models, "inputs": inputs_path, "sets": sets, "iterations": iterations,
                   "threads": threads, "baseline": baseline, "config": [list(c) for c in config]}, handle)
    out = subprocess.run([sys.executable, __file__, spec_path], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"interleaved timing failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    _ort_main(sys.argv[1])
