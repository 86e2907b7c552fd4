"""ONNX export (tf2onnx) and ONNX Runtime inference for stripped models: parity, zeros, demo, speed, INT8.

    python -m tfprune.export logs/mrpc/unstructured-0.7          # a train_mrpc.py run (its model/ folder)
    python -m tfprune.export path/to/hf_model_dir --pair "A" "B"  # any Hugging Face-layout TF BERT

tf2onnx 1.17 has no handler for `Erfc`, which TF 2.21's exact GELU lowers to: `_erfc_handler` writes it as
1 - Erf(x), exact in float32 to ~1e-7, and every export checks parity against TensorFlow.

Files: model.onnx (tf2onnx, as exported), model.fused.onnx (ONNX Runtime's BERT fusions, see onnx_fusion;
parity checked again) and model.int8.onnx (dynamic INT8 of the fused model).
"""
from __future__ import annotations

import gzip
import os
import sys

import numpy as np

import tfprune  # noqa: F401  (tf-keras before TensorFlow)
from tfprune import cli
from tfprune.speed import latency_ms

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
PARITY_TOLERANCE = 1e-4
# Padding drives attention into denormal floats, which cost 28 % of a padded batch-1 INT8 run here;
# TensorFlow flushes them to zero in its threads, so ONNX Runtime is set to do the same.
FLUSH_DENORMALS = ("session.set_denormal_as_zero", "1")
DEMO_PAIRS = [
    ("The company said quarterly profit rose 12 percent.", "Quarterly profit at the company climbed 12 percent, it said."),
    ("He was arrested in Paris on Tuesday.", "Police detained him in Paris on Tuesday."),
    ("The bill passed the Senate by a vote of 60 to 38.", "The Senate approved the bill 60-38."),
    ("The cat sat on the mat.", "Stock markets in Asia fell sharply on Monday."),
    ("She will start her new job next week.", "The museum is closed for renovation until spring."),
    ("Revenue fell to $1.2 billion from $1.5 billion.", "Revenue rose to $1.5 billion from $1.2 billion."),
]


def _erfc_handler(ctx, node, name, args):
    """tf2onnx handler: Erfc(x) -> Sub(1, Erf(x)), in place of the node."""
    from tf2onnx import utils

    dtype = ctx.get_dtype(node.input[0])
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


CUSTOM_HANDLERS = {"Erfc": (_erfc_handler, [])}


def export_bert(model, path: str, opset: int = 17) -> None:
    """TFBert*ForSequenceClassification -> ONNX with int32 inputs, dynamic batch and sequence axes."""
    import tensorflow as tf
    import tf2onnx

    spec = tuple(tf.TensorSpec((None, None), tf.int32, name=name) for name in INPUT_NAMES)

    @tf.function(input_signature=spec)
    def logits(input_ids, attention_mask, token_type_ids):
        return {"logits": model({"input_ids": input_ids, "attention_mask": attention_mask,
                                 "token_type_ids": token_type_ids}, training=False).logits}

    tf2onnx.convert.from_function(logits, input_signature=spec, opset=opset, custom_op_handlers=CUSTOM_HANDLERS,
                                  output_path=path)


def export_keras(model, path: str, opset: int = 17) -> None:
    """A single-input Keras model (such as the MNIST MLP) -> ONNX with a dynamic batch axis."""
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="inputs"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, custom_op_handlers=CUSTOM_HANDLERS,
                               output_path=path)


def export_keras_checked(model, path: str, sample: np.ndarray) -> dict:
    """export_keras, then parity on `sample` and the zeros of every 2-D kernel; raises when either fails."""
    export_keras(model, path)
    sess = session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: sample.astype(np.float32)})[0]
    max_diff = checked_parity(model(sample).numpy(), got, path)
    zeros = checked_zeros(path, [w.numpy() for w in model.weights if len(w.shape) == 2])
    return {"max_abs_logit_diff": max_diff, "zeros": sum(z["onnx_zeros"] for z in zeros), **file_sizes(path)}


def checked_parity(expected: np.ndarray, got: np.ndarray, what: str) -> float:
    """max |expected - got|, raising when it exceeds PARITY_TOLERANCE."""
    max_diff = float(np.abs(expected - got).max())
    if max_diff > PARITY_TOLERANCE:
        raise ValueError(f"ONNX parity failed for {what}: max |logit difference| {max_diff:.2e} > {PARITY_TOLERANCE:g}")
    return max_diff


def checked_zeros(path: str, kernels: list[np.ndarray]) -> list[dict]:
    """initializer_zeros, raising when a kernel's zeros are not all in the ONNX file."""
    zeros = initializer_zeros(path, kernels)
    if any(z["onnx_zeros"] != z["tf_zeros"] for z in zeros):
        raise ValueError(f"ONNX export {path} lost zeros: a kernel's zero count differs in the ONNX initializers")
    return zeros


def session(path: str, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry(*FLUSH_DENORMALS)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_feed(sess, features: dict) -> dict:
    """Cast features to the dtypes the ONNX model declares (int32 or int64 inputs both work)."""
    dtypes = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}
    return {i.name: np.asarray(features[i.name]).astype(dtypes[i.type]) for i in sess.get_inputs()}


def initializer_zeros(path: str, kernels: list[np.ndarray]) -> list[dict]:
    """For each TF kernel, the ONNX initializer holding it (as is or transposed) and both zero counts."""
    import onnx
    from onnx import numpy_helper

    initializers = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer]
    rows = []
    for kernel in kernels:
        match = next((a for a in initializers if a.shape == kernel.shape and np.array_equal(a, kernel)), None)
        if match is None:
            match = next((a for a in initializers if a.shape == kernel.T.shape and np.array_equal(a, kernel.T)), None)
        rows.append({"shape": list(kernel.shape), "tf_zeros": int(kernel.size - np.count_nonzero(kernel)),
                     "onnx_zeros": None if match is None else int(match.size - np.count_nonzero(match))})
    return rows


def file_sizes(path: str) -> dict:
    with open(path, "rb") as handle:
        raw = handle.read()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=6))}


def quantize_int8(fp32_path: str, int8_path: str) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Shape inference knows no com.microsoft ops (the fused graph's): their outputs are float.
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def _encode(tokenizer, pairs, max_length: int = 128, pad_to: int | None = None) -> dict:
    encoded = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=pad_to or max_length,
                        padding="max_length" if pad_to else True, return_tensors="np")
    return {name: encoded[name].astype(np.int32) for name in INPUT_NAMES}


def _batched(run, tokenizer, pairs, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([run(_encode(tokenizer, pairs[i:i + batch_size])) for i in range(0, len(pairs), batch_size)])


def export_and_report(model_dir: str, out_dir: str, dev_rows: list | None, tokenizer=None, model=None,
                      pairs: list[tuple[str, str]] = (), runs: int = 50, speed: bool = True) -> dict:
    """Export `model_dir` (HF layout) to out_dir/model.onnx, model.fused.onnx and model.int8.onnx, check
    parity and zeros, run the demo, dev metrics and the speed comparison; write out_dir/onnx_report.json."""
    import tensorflow as tf
    from transformers import AutoTokenizer, TFBertForSequenceClassification

    from tfprune.trainer import classification_metrics, logits_function

    if model is None:
        model = TFBertForSequenceClassification.from_pretrained(model_dir)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, f"model{suffix}.onnx")
             for name, suffix in (("fp32", ""), ("fp32_fused", ".fused"), ("int8", ".int8"))}
    export_bert(model, paths["fp32"])
    threads = os.cpu_count()
    tf_logits_fn = logits_function(model)

    def tf_run(features):
        return tf_logits_fn({k: tf.constant(v) for k, v in features.items()}).numpy()

    def ort_run(name):
        return lambda features: sessions[name].run(["logits"], ort_feed(sessions[name], features))[0]

    demo_pairs = list(DEMO_PAIRS) + list(pairs)
    parity_pairs = demo_pairs + [(a, b) for a, b, _ in (dev_rows or [])[:64]]
    tf_parity = _batched(tf_run, tokenizer, parity_pairs)
    sessions = {"fp32": session(paths["fp32"], threads)}
    ort_parity = _batched(ort_run("fp32"), tokenizer, parity_pairs)
    max_diff = checked_parity(tf_parity, ort_parity, paths["fp32"])
    fusion = _fuse(model.config, paths, sessions, threads,
                   lambda: checked_parity(tf_parity, _batched(ort_run("fp32_fused"), tokenizer, parity_pairs),
                                          paths["fp32_fused"]))
    quantize_int8(paths.get("fp32_fused", paths["fp32"]), paths["int8"])
    sessions["int8"] = session(paths["int8"], threads)
    kernels = [w.numpy() for w in model.weights if len(w.shape) == 2 and "/encoder/" in w.name]
    zeros = checked_zeros(paths["fp32"], kernels)

    probabilities = _softmax(ort_parity[:len(demo_pairs)])
    report = {
        "model_dir": os.path.abspath(model_dir), "opset": 17, "threads": threads,
        "parity": {"pairs": len(parity_pairs), "max_abs_logit_diff": max_diff, "tolerance": PARITY_TOLERANCE},
        "zeros": {"tf": sum(r["tf_zeros"] for r in zeros), "onnx": sum(r["onnx_zeros"] for r in zeros),
                  "kernels": len(zeros)},
        "demo": [{"sentence1": a, "sentence2": b, "label": "paraphrase" if p[1] >= 0.5 else "not paraphrase",
                  "probability_paraphrase": float(p[1])} for (a, b), p in zip(demo_pairs, probabilities)],
        "fusion": fusion,
        "sizes": {name: file_sizes(path) for name, path in paths.items()},
    }
    if dev_rows:
        dev_pairs, labels = [(a, b) for a, b, _ in dev_rows], np.array([label for _, _, label in dev_rows])
        predictions = {"tf": _batched(tf_run, tokenizer, dev_pairs).argmax(1)}
        predictions.update({name: _batched(ort_run(name), tokenizer, dev_pairs).argmax(1) for name in sessions})
        report["dev"] = {name: classification_metrics(labels, p) for name, p in predictions.items()}
        report["dev"]["pairs"] = len(dev_rows)
        for name in ("fp32", "fp32_fused"):
            if name in predictions:
                report["dev"][f"identical_predictions_{name}_vs_tf"] = float(np.mean(predictions[name] == predictions["tf"]))
    if speed:
        sessions.clear()  # their idle thread pools would compete with the timed processes
        report["speed"] = _speed(tf_run, paths, tokenizer, runs, threads, out_dir)
    cli.write_json(os.path.join(out_dir, "onnx_report.json"), report)
    print(format_report(report))
    return report


def _fuse(config, paths: dict, sessions: dict, threads: int, parity) -> dict:
    """ORT's BERT fusions on a copy of the export (onnx_fusion), kept only if it loads and holds parity
    (`parity` raises otherwise). If not, the fused model leaves `paths` and `sessions`, so INT8 is made
    from the plain export, and the report says why."""
    from tfprune.onnx_fusion import optimize_bert

    try:
        fusion = optimize_bert(paths["fp32"], paths["fp32_fused"], config.num_attention_heads, config.hidden_size)
        sessions["fp32_fused"] = session(paths["fp32_fused"], threads)
        fusion["max_abs_logit_diff"] = parity()
        fusion["used"] = True
    except Exception as error:  # an unfamiliar graph, or drift: fall back, never fail the export for a speed-up
        fusion = {"error": f"{type(error).__name__}: {error}", "used": False}
        sessions.pop("fp32_fused", None)
        path = paths.pop("fp32_fused")
        if os.path.exists(path):
            os.remove(path)
        print(f"warning: ORT fusion not used ({fusion['error']}); INT8 made from the plain export", file=sys.stderr)
    return fusion


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


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


def _ort_latency(path: str, feeds_path: str, runs: int, threads: int) -> dict:
    """Time an ONNX model in a fresh process that loads only onnxruntime: as deployed, and without
    TensorFlow's (or another session's) idle threads competing for the cores."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", _ORT_TIMER, path, feeds_path, str(runs), str(threads),
                          *FLUSH_DENORMALS], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _speed(tf_run, paths: dict, tokenizer, runs: int, threads: int, out_dir: str) -> dict:
    """Latency at batch 1 and throughput at batch 32, both padded to 128 tokens, same inputs and thread
    count for every engine; TF in this process (graph mode), each ORT model in its own process."""
    one = _encode(tokenizer, DEMO_PAIRS[:1], pad_to=128)
    many = _encode(tokenizer, (DEMO_PAIRS * 6)[:32], pad_to=128)
    feeds_path = os.path.join(out_dir, "timing_inputs.npz")
    np.savez(feeds_path, **{f"{k}_1": v for k, v in one.items()}, **{f"{k}_32": v for k, v in many.items()})
    timings = {"tf_graph": {"1": latency_ms(lambda: tf_run(one), runs),
                            "32": latency_ms(lambda: tf_run(many), max(10, runs // 5), warmup=2)}}
    for name, path in paths.items():
        timings[f"ort_{name}"] = _ort_latency(path, feeds_path, runs, threads)
    os.remove(feeds_path)
    result = {name: {"batch1_ms": t["1"], "batch32_ms": t["32"], "batch32_sequences_per_s": 32e3 / t["32"]["p50"]}
              for name, t in timings.items()}

    def ratio(slow, fast, batch):
        return result[slow][f"batch{batch}_ms"]["p50"] / result[fast][f"batch{batch}_ms"]["p50"]

    # INT8 is measured against the best fp32 model: the fused one when fusion worked, as INT8 is made from it.
    best_fp32 = "ort_fp32_fused" if "ort_fp32_fused" in result else "ort_fp32"
    result.update({"ort_fp32_vs_tf_batch1": ratio("tf_graph", "ort_fp32", 1), "int8_baseline": best_fp32,
                   "int8_vs_fp32_batch1": ratio(best_fp32, "ort_int8", 1),
                   "int8_vs_fp32_batch32": ratio(best_fp32, "ort_int8", 32),
                   "int8_vs_unfused_fp32_batch1": ratio("ort_fp32", "ort_int8", 1)})
    return result


def _fusion_line(fusion: dict) -> str:
    if not fusion["used"]:
        return f"ORT fusion not used: {fusion['error']}"
    return (f"ORT fusion: {', '.join(f'{n} {op}' for op, n in fusion['fused'].items())}; "
            f"max |Δlogit| vs TF {fusion['max_abs_logit_diff']:.2e}")


def format_report(report: dict) -> str:
    table = cli.markdown_table
    lines = [f"ONNX parity: max |Δlogit| {report['parity']['max_abs_logit_diff']:.2e} over {report['parity']['pairs']} pairs "
             f"(tolerance {report['parity']['tolerance']:g}); zeros in encoder kernels: TF {report['zeros']['tf']:,}, "
             f"ONNX {report['zeros']['onnx']:,}", _fusion_line(report["fusion"]), "",
             table(["sentence 1", "sentence 2", "prediction", "P(paraphrase)>"],
                   [[d["sentence1"], d["sentence2"], d["label"], f"{d['probability_paraphrase']:.3f}"] for d in report["demo"]]),
             "", table(["file", "MB>", "gzip MB>"], [[name, f"{s['bytes'] / 1e6:.1f}", f"{s['gzip_bytes'] / 1e6:.1f}"]
                                                      for name, s in report["sizes"].items()])]
    if "dev" in report:
        dev = report["dev"]
        lines += ["", table([f"dev ({dev['pairs']} pairs)", "accuracy %>", "F1 %>"],
                            [[name, f"{100 * dev[name]['accuracy']:.2f}", f"{100 * dev[name]['f1']:.2f}"]
                             for name in ("tf", "fp32", "fp32_fused", "int8") if name in dev]),
                  "identical predictions vs TF: " + ", ".join(
                      f"{name} {100 * dev[f'identical_predictions_{name}_vs_tf']:.2f} %" for name in ("fp32", "fp32_fused")
                      if f"identical_predictions_{name}_vs_tf" in dev)]
    if "speed" in report:
        s = report["speed"]
        lines += ["", table([f"engine ({report['threads']} threads, length 128)", "batch 1 p50 ms>", "batch 1 p90 ms>",
                             "batch 32 seq/s>"],
                            [[name, f"{s[name]['batch1_ms']['p50']:.2f}", f"{s[name]['batch1_ms']['p90']:.2f}",
                              f"{s[name]['batch32_sequences_per_s']:.1f}"]
                             for name in ("tf_graph", "ort_fp32", "ort_fp32_fused", "ort_int8") if name in s]),
                  f"ORT fp32 vs TF at batch 1: {s['ort_fp32_vs_tf_batch1']:.2f}x; INT8 vs {s['int8_baseline']}: "
                  f"{s['int8_vs_fp32_batch1']:.2f}x (batch 1), {s['int8_vs_fp32_batch32']:.2f}x (batch 32); "
                  f"INT8 vs ort_fp32: {s['int8_vs_unfused_fp32_batch1']:.2f}x (batch 1)"]
    return "\n".join(lines)


def resolve_model_dir(path: str) -> str:
    """A train_mrpc.py run folder (its model/) or a Hugging Face model folder; else a UsageError."""
    if not os.path.isdir(path):
        raise cli.UsageError(f"{path} does not exist")
    for candidate in (os.path.join(path, "model"), path):
        if os.path.isfile(os.path.join(candidate, "config.json")) and (
                os.path.isfile(os.path.join(candidate, "tf_model.h5"))):
            return candidate
    raise cli.UsageError(f"{path} is neither a train_mrpc.py run folder nor a Hugging Face model folder "
                         "(config.json and tf_model.h5)")


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m tfprune.export", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="train_mrpc.py run folder or Hugging Face model folder")
    parser.add_argument("--output-dir", help="default: <path>/onnx")
    parser.add_argument("--data-dir", help="GLUE MRPC folder for dev metrics (default: $GLUE_DIR/MRPC, data/glue/MRPC)")
    parser.add_argument("--max-eval-samples", type=int, help="first N dev pairs only")
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("SENTENCE1", "SENTENCE2"),
                        help="an extra demo pair (repeatable)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs at batch 1 (default: %(default)s)")
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args(argv)
    model_dir = resolve_model_dir(args.path)
    import tensorflow as tf

    try:  # the same thread count for TensorFlow and ONNX Runtime (session() uses os.cpu_count())
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
    except RuntimeError:  # TensorFlow already initialised by the caller
        pass
    from tfprune.data.glue import find_mrpc_dir, load_mrpc

    dev_rows = load_mrpc(args.data_dir)[0]["dev"][:args.max_eval_samples] if (args.data_dir or find_mrpc_dir(None)) else None
    out_dir = args.output_dir or os.path.join(args.path, "onnx")
    with cli.atomic_output_dir(out_dir) as staging:
        export_and_report(model_dir, staging, dev_rows, pairs=[tuple(p) for p in args.pair], runs=args.runs,
                          speed=not args.no_speed)
    print(f"\nONNX models and onnx_report.json in {out_dir}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
