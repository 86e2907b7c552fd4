"""Latency of BERT classifiers in ONNX Runtime, timed interleaved: dense against pruned and compacted models,
fp32 and INT8, at batch 1 and 32, at length 128 (128 real tokens, no padding) and on the dev set's real
lengths (batch 1: each of the first --dev-examples pairs at its own length; batch 32: the whole dev set in
batches padded to their longest pair, and padded to 128 as fixed-shape serving does). A token-pruned model
drops padding at its first pruner, so padded-128 batches show its largest gain and dynamically padded ones
the honest one.

Every model is exported first (tfprune.export's pipeline: parity with TensorFlow, zeros, ORT fusions where
they hold parity, INT8); then all files are timed in one bare ONNX Runtime process on one shared, spinning
thread pool, in turn within every iteration (`tfprune.export.interleaved`). Speed-ups are medians of
per-iteration ratios against the first model's fp32 file (fused when fusion held parity).

Then each file runs alone in its own process with ONNX Runtime's default session options at length 128
(`--alone-runs`), as a model deployed alone: the interleaved ratios are checked against these. Then each
file runs alone under ONNX Runtime's profiler at length 128 (`--profile-runs`), and a last table says where
its time goes: matrix products, the fused attention, layer norms, GELU, the rest. Removing FFN neurons
shrinks only the FFN's products and GELU, so their share of the dense model bounds its speed-up.

    python benchmarks/bert_latency.py --model dense=logs/mrpc/dense \\
        --model neurons-0.5=logs/mrpc/neurons-0.5/compact_model --output-dir logs/latency

Models of another sentence-pair task (`--task rte`, `stsb`, `wnli`) are timed on its dev set and scored with
its metric; the length-128 inputs are the same for every task.
"""
import argparse
import os
import sys

# isort: off
from tfprune import cli  # first: it quiets TensorFlow's start-up
import numpy as np
# isort: on

from tfprune.tasks.glue_tasks import TASKS

PAIR_TASKS = sorted(name for name, task in TASKS.items() if task.sentence2 is not None)


def named_path(text: str):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


# ONNX op types by what they compute, fp32 and INT8 (ORT's fused BERT graph); the rest counts as "other".
OP_KINDS = {
    "matmul": {"MatMul", "FusedMatMul", "Gemm", "FusedGemm", "DynamicQuantizeMatMul", "MatMulInteger",
               "MatMulIntegerToFloat", "QGemm"},
    "attention": {"Attention", "QAttention", "MultiHeadAttention", "Softmax"},
    "layer norm": {"SkipLayerNormalization", "LayerNormalization", "EmbedLayerNormalization",
                   "QEmbedLayerNormalization", "SkipSimplifiedLayerNormalization"},
    "gelu": {"BiasGelu", "Gelu", "FastGelu", "Erf"},
}


KIND_COLUMNS = list(OP_KINDS) + ["other", "between ops"]


def by_kind(profile: dict) -> dict:
    """{kind: ms per run} of an `op_profile`, in KIND_COLUMNS' order; "between ops" is the run's time outside
    every op's kernel (scheduling, allocation)."""
    totals = dict.fromkeys(KIND_COLUMNS, 0.0)
    for op, entry in profile["ops"].items():
        totals[next((kind for kind, ops in OP_KINDS.items() if op in ops), "other")] += entry["ms"]
    totals["between ops"] = profile["run_ms"] - sum(entry["ms"] for entry in profile["ops"].values())
    return totals


def length_128_inputs(tokenizer, batch: int, rng) -> dict:
    """`batch` sequences of 128 real tokens: [CLS], random word pieces, [SEP] in the middle and at the end."""
    vocab = tokenizer.vocab_size
    ids = rng.integers(min(1000, vocab // 2), vocab, (batch, 128)).astype(np.int32)
    ids[:, 0], ids[:, 63], ids[:, 127] = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.sep_token_id
    types = np.zeros_like(ids)
    types[:, 64:] = 1
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types}


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=named_path, action="append", required=True, metavar="NAME=PATH",
                        help="a model folder or a training run's folder (its model/); the first is the baseline")
    parser.add_argument("--task", default="mrpc", choices=PAIR_TASKS, help="the GLUE task of the models and of the "
                        "dev set timed (default: %(default)s)")
    parser.add_argument("--data-dir", help="the task's GLUE folder (default: $GLUE_DIR/<task>, data/glue/<task>)")
    parser.add_argument("--output-dir", default=os.path.join("logs", "latency"))
    parser.add_argument("--iterations", type=int, default=40, help="timed rounds at length 128 (batch 1; batch 32 "
                        "gets a quarter, the dev sets an eighth) (default: %(default)s)")
    parser.add_argument("--dev-examples", type=int, default=64, help="dev pairs timed one by one per round")
    parser.add_argument("--profile-runs", type=int, default=20, help="profiled runs of each file at length 128, "
                        "batch 1 (batch 32 gets a quarter); 0 profiles nothing (default: %(default)s)")
    parser.add_argument("--alone-runs", type=int, default=50, help="runs of each file alone in its own process "
                        "at length 128, batch 1 (batch 32 gets a fifth, at least 10); 0 skips it (default: %(default)s)")
    args = parser.parse_args(argv)
    cli.require_positive(args, "iterations", "dev_examples")
    for flag in ("profile_runs", "alone_runs"):
        if getattr(args, flag) < 0:
            raise cli.UsageError(f"--{flag.replace('_', '-')} must be 0 or more, got {getattr(args, flag)}")
    names = [name for name, _ in args.model]
    if len(set(names)) != len(names):
        raise cli.UsageError(f"--model names must differ, got {names}")
    from tfprune.cli.export import resolve_model_dir

    model_dirs = {name: resolve_model_dir(path) for name, path in args.model}
    from tfprune.export.bert_report import encode_pairs, export_and_report
    from tfprune.export.interleaved import ort_interleaved
    from tfprune.export.runtime import FLUSH_DENORMALS
    from tfprune.export.timing import ort_latency
    from tfprune.report import markdown_table, write_json
    from tfprune.tasks.glue import demo_pairs, load_glue

    task = TASKS[args.task]
    dev_rows = load_glue(task, args.data_dir)[0]["dev"]
    demo = demo_pairs(task, dev_rows)
    metric = task.metrics[0]
    threads = os.cpu_count()
    with cli.claim_output_dir(args.output_dir), cli.atomic_output_dir(args.output_dir) as out:
        reports, files = {}, {}
        for name, model_dir in model_dirs.items():
            print(f"exporting {name} ({model_dir})", file=sys.stderr)
            report = export_and_report(model_dir, os.path.join(out, name), dev_rows, demo, speed=False, task=task)
            reports[name] = report
            report["timed_fp32_file"] = "fp32_fused" if report["fusion"]["used"] else "fp32"
            files[f"{name} fp32"] = os.path.join(out, name, "model.fused.onnx" if report["fusion"]["used"] else "model.onnx")
            files[f"{name} int8"] = os.path.join(out, name, "model.int8.onnx")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dirs[names[0]])
        rng = np.random.default_rng(0)
        arrays, sets = {}, {}
        for batch in (1, 32):
            for key, value in length_128_inputs(tokenizer, batch, rng).items():
                arrays[f"len128_b{batch}/{key}"] = value
            sets[f"batch{batch}_len128"] = [f"len128_b{batch}"]
        pairs = [(a, b) for a, b, _ in dev_rows]
        for batch, chosen, pad_to in ((1, pairs[:args.dev_examples], None), (32, pairs, None), (32, pairs, 128)):
            prefixes = []
            name = f"batch{batch}_dev" + (f"_pad{pad_to}" if pad_to else "")
            for start in range(0, len(chosen), batch):
                prefix = f"{name}_{start}"
                for key, value in encode_pairs(tokenizer, chosen[start:start + batch], pad_to=pad_to).items():
                    arrays[f"{prefix}/{key}"] = value
                prefixes.append(prefix)
            sets[name] = prefixes
        inputs_path = os.path.join(out, "timing_inputs.npz")
        np.savez(inputs_path, **arrays)
        iterations = {"batch1_len128": args.iterations, "batch32_len128": max(5, args.iterations // 4),
                      "batch1_dev": max(5, args.iterations // 8), "batch32_dev": max(5, args.iterations // 8),
                      "batch32_dev_pad128": max(5, args.iterations // 8)}
        baseline = f"{names[0]} fp32"
        print(f"timing {len(files)} files interleaved, {threads} threads", file=sys.stderr)
        profile = ({"batch1_len128": args.profile_runs, "batch32_len128": max(1, args.profile_runs // 4)}
                   if args.profile_runs else {})
        timings = ort_interleaved(files, inputs_path, sets, iterations, threads, baseline, [FLUSH_DENORMALS],
                                  os.path.join(out, "timing_spec.json"), profile)
        op_profiles = timings.pop("op_profile", {})
        alone = {}
        if args.alone_runs:
            print("timing each file alone", file=sys.stderr)
            feeds_path = os.path.join(out, "alone_inputs.npz")
            np.savez(feeds_path, **{f"{key.split('/')[1]}_{batch}": value for key, value in arrays.items()
                                    for batch in (1, 32) if key.startswith(f"len128_b{batch}/")})
            alone = {name: ort_latency(path, feeds_path, args.alone_runs, threads) for name, path in files.items()}
            os.remove(feeds_path)
        os.remove(inputs_path)
        os.remove(os.path.join(out, "timing_spec.json"))
        rows = []
        for candidate, path in files.items():
            name, engine = candidate.rsplit(" ", 1)
            report = reports[name]
            dev = report["dev"].get("int8" if engine == "int8" else report["timed_fp32_file"])
            rows.append([name, engine, f"{100 * dev[metric]:.2f}", f"{os.path.getsize(path) / 1e6:.1f}"] +
                        [f"{timings[s][candidate]['p50_ms']:.1f} ({timings[s][candidate]['speedup']:.2f}x)"
                         for s in sets])
        table = markdown_table(["model", "engine", f"dev {metric} %>", "file MB>"] + [f"{s} ms (speed-up)>" for s in sets], rows)
        alone_table = markdown_table(["file", "batch 1 ms>", "speed-up>", "interleaved>", "batch 32 ms>", "speed-up>",
                                      "interleaved>"], [
            [candidate] + [item for batch, set_name in (("1", "batch1_len128"), ("32", "batch32_len128")) for item in (
                f"{alone[candidate][batch]['p50']:.2f}", f"{alone[baseline][batch]['p50'] / alone[candidate][batch]['p50']:.2f}x",
                f"{timings[set_name][candidate]['speedup']:.2f}x")] for candidate in alone])
        profile_table = markdown_table(["set", "file", "run ms>"] + [f"{kind} ms (share)>" for kind in KIND_COLUMNS], [
            [set_name, candidate, f"{profile['run_ms']:.2f}"] +
            [f"{ms:.2f} ({100 * ms / profile['run_ms']:.0f} %)" for ms in by_kind(profile).values()]
            for set_name, per_file in op_profiles.items() for candidate, profile in per_file.items()])
        results = {"task": task.name, "baseline": baseline, "threads": threads, "iterations": iterations, "files": files,
                   "timings": timings, "alone": alone, "op_profile": op_profiles, "exports": reports,
                   "sets": {s: len(p) for s, p in sets.items()}}
        write_json(os.path.join(out, "latency.json"), results)
    print(table)
    if alone:
        print(f"\neach file alone at length 128 (its own process, ORT's default options; p50 of {args.alone_runs} runs "
              f"at batch 1):\n{alone_table}")
    if op_profiles:
        print(f"\nwhere the time goes (ONNX Runtime's profiler, each file alone):\n{profile_table}")
    print(f"\nspeed-ups: median of per-round ratios against {baseline}; {threads} threads; results in "
          f"{args.output_dir}/latency.json")


if __name__ == "__main__":
    sys.exit(cli.run(main))
