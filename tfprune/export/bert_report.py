"""The BERT classifier export pipeline: ONNX (parity, zeros), ORT fusions, INT8, demo pairs, dev metrics,
speed, and the report of it all (onnx_report.json).

Files: model.onnx (tf2onnx, as exported), model.fused.onnx (ONNX Runtime's BERT fusions, see `fusion`;
parity checked again) and model.int8.onnx (dynamic INT8 of the fused model).
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.export.onnx import INPUT_NAMES, PARITY_TOLERANCE, checked_parity, checked_zeros, export_bert, file_sizes
from tfprune.export.quantize import quantize_int8
from tfprune.export.runtime import ort_feed, session
from tfprune.export.timing import ort_latency
from tfprune.latency import latency_ms
from tfprune.report import markdown_table, write_json
from tfprune.tasks.glue_tasks import TASKS, Task
from tfprune.tasks.metrics import task_metrics


def encode_pairs(tokenizer, pairs, max_length: int = 128, pad_to: int | None = None) -> dict:
    """The int32 ONNX inputs of sentence pairs: padded to the longest pair, or to `pad_to`."""
    encoded = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=pad_to or max_length,
                        padding="max_length" if pad_to else True, return_tensors="np")
    return {name: encoded[name].astype(np.int32) for name in INPUT_NAMES}


def _batched(run, tokenizer, pairs, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([run(encode_pairs(tokenizer, pairs[i:i + batch_size])) for i in range(0, len(pairs), batch_size)])


def export_and_report(model_dir: str, out_dir: str, dev_rows: list | None, demo_pairs: list[tuple[str, str]],
                      tokenizer=None, model=None, runs: int = 50, speed: bool = True, task: Task | None = None) -> dict:
    """Export a sentence-pair classifier (or regressor) to out_dir/model.onnx, model.fused.onnx and
    model.int8.onnx, check parity and zeros, run the demo pairs, the dev metrics and the speed comparison;
    write out_dir/onnx_report.json and return the report.

    Args:
        model_dir: the model in Hugging Face layout (loaded unless `model` is given).
        out_dir: where the files go (created).
        dev_rows: (sentence1, sentence2, label) rows for dev metrics and parity, or None.
        demo_pairs: pairs shown with their probabilities (at least one: it is also the timing input).
        task: the GLUE task of the model and of `dev_rows` (default MRPC): its metrics, and its labels for the
            demo pairs' predictions (a score for regression).
    Raises:
        ParityError: an export that does not match TensorFlow (a bug, not a user error).
    """
    import tensorflow as tf
    from transformers import AutoTokenizer

    from tfprune.models.bert.compact import load_pretrained
    from tfprune.training import logits_function

    if not demo_pairs:
        raise TfpruneError("demo_pairs must hold at least one pair")
    task = task or TASKS["mrpc"]
    if task.sentence2 is None:
        raise TfpruneError(f"{task.name} is a single-sentence task: the export runs sentence pairs")

    if model is None:
        model = load_pretrained(model_dir)  # compacted models with per-layer sizes too
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

    demo_pairs = list(demo_pairs)
    parity_pairs = demo_pairs + [(a, b) for a, b, _ in (dev_rows or [])[:64]]
    tf_parity = _batched(tf_run, tokenizer, parity_pairs)
    sessions = {"fp32": session(paths["fp32"], threads)}
    ort_parity = _batched(ort_run("fp32"), tokenizer, parity_pairs)
    max_diff = checked_parity(tf_parity, ort_parity, paths["fp32"])
    fusion = _fuse(model, paths, sessions, threads,
                   lambda: checked_parity(tf_parity, _batched(ort_run("fp32_fused"), tokenizer, parity_pairs),
                                          paths["fp32_fused"]))
    quantize_int8(paths.get("fp32_fused", paths["fp32"]), paths["int8"])
    sessions["int8"] = session(paths["int8"], threads)
    kernels = [w.numpy() for w in model.weights if len(w.shape) == 2 and "/encoder/" in w.name]
    zeros = checked_zeros(paths["fp32"], kernels)

    report = {
        "model_dir": os.path.abspath(model_dir), "opset": 17, "threads": threads,
        "parity": {"pairs": len(parity_pairs), "max_abs_logit_diff": max_diff, "tolerance": PARITY_TOLERANCE},
        "zeros": {"tf": sum(r["tf_zeros"] for r in zeros), "onnx": sum(r["onnx_zeros"] for r in zeros),
                  "kernels": len(zeros)},
        "task": task.name,
        "demo": _demo(task, demo_pairs, ort_parity[:len(demo_pairs)]),
        "fusion": fusion,
        "sizes": {name: file_sizes(path) for name, path in paths.items()},
    }
    if dev_rows:
        dev_pairs, labels = [(a, b) for a, b, _ in dev_rows], np.array([label for _, _, label in dev_rows])
        predict = (lambda logits: logits[:, 0]) if task.is_regression else (lambda logits: logits.argmax(1))
        predictions = {"tf": predict(_batched(tf_run, tokenizer, dev_pairs))}
        predictions.update({name: predict(_batched(ort_run(name), tokenizer, dev_pairs)) for name in sessions})
        report["dev"] = {name: task_metrics(task.metrics, labels, p) for name, p in predictions.items()}
        report["dev"]["pairs"] = len(dev_rows)
        for name in ("fp32", "fp32_fused"):
            if name not in predictions:
                continue
            if task.is_regression:  # scores never match bitwise: how far they move
                report["dev"][f"max_abs_score_diff_{name}_vs_tf"] = float(np.abs(predictions[name] - predictions["tf"]).max())
            else:
                report["dev"][f"identical_predictions_{name}_vs_tf"] = float(np.mean(predictions[name] == predictions["tf"]))
    if speed:
        sessions.clear()  # their idle thread pools would compete with the timed processes
        report["speed"] = _speed(tf_run, paths, tokenizer, runs, threads, out_dir, demo_pairs)
    write_json(os.path.join(out_dir, "onnx_report.json"), report)
    return report


def _fuse(model, paths: dict, sessions: dict, threads: int, parity) -> dict:
    """ORT's BERT fusions on a copy of the export (`fusion`), kept only if it loads and holds parity
    (`parity` raises otherwise). If not, the fused model leaves `paths` and `sessions`, so INT8 is made
    from the plain export, and the report says why. A compacted model's layers give the head count (0, left
    to ORT to read off the graph, where they differ)."""
    from tfprune.export.fusion import optimize_bert
    from tfprune.models.bert import encoder_layers

    heads = {layer.attention.self_attention.num_attention_heads for layer in encoder_layers(model)}
    try:
        fusion = optimize_bert(paths["fp32"], paths["fp32_fused"], heads.pop() if len(heads) == 1 else 0,
                               model.config.hidden_size)
        sessions["fp32_fused"] = session(paths["fp32_fused"], threads)
        fusion["max_abs_logit_diff"] = parity()
        fusion["used"] = True
    except Exception as error:  # an unfamiliar graph, or drift: fall back, never fail the export for a speed-up
        fusion = {"error": f"{type(error).__name__}: {error}", "used": False}
        sessions.pop("fp32_fused", None)
        path = paths.pop("fp32_fused")
        if os.path.exists(path):
            os.remove(path)
        warnings.warn(f"ORT fusion not used ({fusion['error']}); INT8 made from the plain export", stacklevel=2)
    return fusion


def _demo(task: Task, pairs: list, logits: np.ndarray) -> list[dict]:
    """The demo pairs with ONNX Runtime's prediction: MRPC's paraphrase probability, another task's label
    and its probability, or a regression task's score."""
    if task.is_regression:
        return [{"sentence1": a, "sentence2": b, "score": float(row[0])} for (a, b), row in zip(pairs, logits)]
    probabilities = _softmax(logits)
    if task.name == "mrpc":
        return [{"sentence1": a, "sentence2": b, "label": "paraphrase" if p[1] >= 0.5 else "not paraphrase",
                 "probability_paraphrase": float(p[1])} for (a, b), p in zip(pairs, probabilities)]
    return [{"sentence1": a, "sentence2": b, "label": task.labels[int(p.argmax())], "probability": float(p.max())}
            for (a, b), p in zip(pairs, probabilities)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _speed(tf_run, paths: dict, tokenizer, runs: int, threads: int, out_dir: str, pairs: list) -> dict:
    """Latency at batch 1 and throughput at batch 32, both padded to 128 tokens, same inputs and thread
    count for every engine; TF in this process (graph mode), each ORT model in its own process."""
    one = encode_pairs(tokenizer, pairs[:1], pad_to=128)
    many = encode_pairs(tokenizer, (pairs * 32)[:32], pad_to=128)
    feeds_path = os.path.join(out_dir, "timing_inputs.npz")
    np.savez(feeds_path, **{f"{k}_1": v for k, v in one.items()}, **{f"{k}_32": v for k, v in many.items()})
    timings = {"tf_graph": {"1": latency_ms(lambda: tf_run(one), runs),
                            "32": latency_ms(lambda: tf_run(many), max(10, runs // 5), warmup=2)}}
    for name, path in paths.items():
        timings[f"ort_{name}"] = ort_latency(path, feeds_path, runs, threads)
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


def _demo_table(demo: list[dict]) -> str:
    if "score" in demo[0]:
        return markdown_table(["sentence 1", "sentence 2", "score>"],
                              [[d["sentence1"], d["sentence2"], f"{d['score']:.3f}"] for d in demo])
    key, title = (("probability_paraphrase", "P(paraphrase)>") if "probability_paraphrase" in demo[0]
                  else ("probability", "P(prediction)>"))
    return markdown_table(["sentence 1", "sentence 2", "prediction", title],
                          [[d["sentence1"], d["sentence2"], d["label"], f"{d[key]:.3f}"] for d in demo])


def format_report(report: dict) -> str:
    table = markdown_table
    lines = [f"ONNX parity: max |Δlogit| {report['parity']['max_abs_logit_diff']:.2e} over {report['parity']['pairs']} pairs "
             f"(tolerance {report['parity']['tolerance']:g}); zeros in encoder kernels: TF {report['zeros']['tf']:,}, "
             f"ONNX {report['zeros']['onnx']:,}", _fusion_line(report["fusion"]), "",
             _demo_table(report["demo"]),
             "", table(["file", "MB>", "gzip MB>"], [[name, f"{s['bytes'] / 1e6:.1f}", f"{s['gzip_bytes'] / 1e6:.1f}"]
                                                      for name, s in report["sizes"].items()])]
    if "dev" in report:
        dev = report["dev"]
        engines = [name for name in ("tf", "fp32", "fp32_fused", "int8") if name in dev]
        metric_names = list(dev["tf"])
        lines += ["", table([f"dev ({dev['pairs']} pairs)"] + [f"{m} %>" for m in metric_names],
                            [[name] + [f"{100 * dev[name][m]:.2f}" for m in metric_names] for name in engines])]
        if any(f"identical_predictions_{name}_vs_tf" in dev for name in engines):
            lines.append("identical predictions vs TF: " + ", ".join(
                f"{name} {100 * dev[f'identical_predictions_{name}_vs_tf']:.2f} %" for name in ("fp32", "fp32_fused")
                if f"identical_predictions_{name}_vs_tf" in dev))
        else:
            lines.append("max |score difference| vs TF: " + ", ".join(
                f"{name} {dev[f'max_abs_score_diff_{name}_vs_tf']:.2e}" for name in ("fp32", "fp32_fused")
                if f"max_abs_score_diff_{name}_vs_tf" in dev))
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
