"""Interleaved latency: every candidate timed in turn within each iteration, the order rotating (A B C, B C A,
C A B, ...), so that the load of a shared machine, which drifts over seconds, falls on all of them alike.
A candidate's speed-up is the median over iterations of the baseline's time / its time in the same
iteration: timed one after another, the same export measured 1.56x on a quiet run and 0.54x beside
another job.

This file imports neither tfprune nor TensorFlow: `ort_interleaved` runs it as a script in a bare process
that loads only ONNX Runtime, as deployed. All sessions share one global thread pool that spin-waits, as
ORT's default pool does: each candidate runs on awake threads, as a model deployed alone does, and no idle
session's threads take the cores from the one being timed. (Per-session pools that spin did: 41 ms per run
of a dense MiniLM on 2 cores against 15 ms. Per-session pools that do not spin wake a sleeping thread for
every parallel op, which costs small models most: the 3/4-neurons-half-heads INT8 MiniLM measured 3.33x
dense fp32 that way, 4.04x on the shared pool, 4.40x with each file alone in its own process.) Denormals are
flushed to zero in the whole process before the pool starts, so its threads inherit it (a session's own
setting reaches only the thread that calls it).

`op_profile` says where a model's time goes, per ONNX op type, from ONNX Runtime's own profiler (run after
the timing, one model at a time): the share outside the matrix products bounds what removing neurons can buy.
"""
from __future__ import annotations

import json
import os
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


def op_profile(events: list, warmup: int) -> dict:
    """Where the time of the runs after the first `warmup` goes, from ONNX Runtime profile events: the mean
    ms of a run ("run_ms") and, per op type, the mean ms and the nodes run per run, largest first."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
                  key=lambda e: e["ts"])[warmup:]
    if not runs:
        raise ValueError(f"the profile holds no run after the {warmup} warm-up runs")
    start, count = runs[0]["ts"], len(runs)
    ops = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= start:
            op = ops.setdefault(event["args"]["op_name"], {"ms": 0.0, "nodes": 0})
            op["ms"] += event["dur"] / 1e3 / count
            op["nodes"] += 1
    for op in ops.values():
        op["nodes"] /= count
    return {"run_ms": sum(e["dur"] for e in runs) / 1e3 / count, "runs": count,
            "ops": dict(sorted(ops.items(), key=lambda item: -item[1]["ms"]))}


def flush_denormals_in_process() -> None:
    """Set flush-to-zero and denormals-are-zero in this thread's MXCSR (x86-64 glibc: the register is the last
    word of `fenv_t`); threads started afterwards inherit it. Elsewhere a no-op: sessions still flush in the
    calling thread."""
    import ctypes
    import ctypes.util
    import platform

    libm_path = ctypes.util.find_library("m")
    if platform.machine() not in ("x86_64", "AMD64") or not libm_path:
        return
    libm = ctypes.CDLL(libm_path)
    env = (ctypes.c_uint32 * 8)()  # fenv_t: the 28-byte x87 environment, then MXCSR
    if libm.fegetenv(env) == 0:
        env[7] |= 0x8040  # FTZ (bit 15) and DAZ (bit 6)
        libm.fesetenv(env)


def _ort_main(spec_path: str) -> None:
    """The bare process: spec {"models": {name: onnx path}, "inputs": npz path, "sets": {set: [feed prefixes]},
    "iterations": {set: n}, "threads": n, "baseline": name, "config": [[key, value], ...], optionally
    "profile": {set: runs}}; prints {set: summarize(...)} as JSON, with "op_profile": {set: {name:
    op_profile(...)}} of each model on the set's first feed when "profile" is given."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state

    with open(spec_path) as handle:
        spec = json.load(handle)
    if ["session.set_denormal_as_zero", "1"] in spec["config"]:
        flush_denormals_in_process()
    onnxruntime_pybind11_state.set_global_thread_pool_sizes(spec["threads"], 1)
    def open_session(path, profile_prefix=None):
        options = ort.SessionOptions()
        options.use_per_session_threads = False
        for key, value in spec["config"]:
            options.add_session_config_entry(key, value)
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    sessions = {name: open_session(path) for name, path in spec["models"].items()}
    arrays = np.load(spec["inputs"])
    dtypes = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}
    result = {}
    def runner(sess, prefixes):
        feeds = [{i.name: arrays[f"{prefix}/{i.name}"].astype(dtypes[i.type]) for i in sess.get_inputs()}
                 for prefix in prefixes]
        return lambda: [sess.run(None, feed) for feed in feeds]

    for set_name, prefixes in spec["sets"].items():
        times = interleave({name: runner(sess, prefixes) for name, sess in sessions.items()},
                           spec["iterations"][set_name])
        result[set_name] = summarize(times, spec["baseline"])
    profiles = {}
    for set_name, runs in spec.get("profile", {}).items():
        profiles[set_name] = {}
        for name, path in spec["models"].items():
            sess = open_session(path, os.path.join(os.path.dirname(spec_path), "ort_profile"))
            run = runner(sess, spec["sets"][set_name][:1])
            for _ in range(2 + runs):
                run()
            trace = sess.end_profiling()
            with open(trace) as handle:
                profiles[set_name][name] = op_profile(json.load(handle), warmup=2)
            os.remove(trace)
    if profiles:
        result["op_profile"] = profiles
    print(json.dumps(result))


def ort_interleaved(models: dict, inputs_path: str, sets: dict, iterations: dict, threads: int, baseline: str,
                    config: list, spec_path: str, profile: dict | None = None) -> dict:
    """Time ONNX `models` ({name: path}) interleaved on each input set, in a bare process; with `profile`
    ({set: runs}), each model's op profile on those sets as well. See `_ort_main`."""
    with open(spec_path, "w") as handle:
        json.dump({"models": models, "inputs": inputs_path, "sets": sets, "iterations": iterations,
                   "threads": threads, "baseline": baseline, "config": [list(c) for c in config],
                   "profile": profile or {}}, handle)
    out = subprocess.run([sys.executable, __file__, spec_path], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"interleaved timing failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    _ort_main(sys.argv[1])
