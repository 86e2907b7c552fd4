"""Export a BERT sentence-pair classifier to ONNX: parity and zeros checked, ORT fusions, INT8, demo pairs,
dev metrics and speed.

    python -m tfprune.export logs/mrpc/unstructured-0.7          # a train_mrpc.py run (its model/ folder)
    python -m tfprune.export path/to/hf_model_dir --pair "A" "B"  # any Hugging Face-layout TF BERT
"""
from __future__ import annotations

import argparse
import os

from tfprune.cli import ArgumentParser, UsageError, atomic_output_dir, claim_output_dir, run


def resolve_model_dir(path: str) -> str:
    """A train_mrpc.py run folder (its model/) or a Hugging Face model folder; else a UsageError."""
    if not os.path.isdir(path):
        raise UsageError(f"{path} does not exist")
    for candidate in (os.path.join(path, "model"), path):
        if os.path.isfile(os.path.join(candidate, "config.json")) and (
                os.path.isfile(os.path.join(candidate, "tf_model.h5"))):
            return candidate
    raise UsageError(f"{path} is neither a train_mrpc.py run folder nor a Hugging Face model folder "
                         "(config.json and tf_model.h5)")


def main(argv=None):
    parser = ArgumentParser(prog="python -m tfprune.export", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
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
    from tfprune.export.bert_report import export_and_report, format_report
    from tfprune.tasks.glue import MRPC_DEMO_PAIRS, find_mrpc_dir, load_mrpc

    dev_rows = load_mrpc(args.data_dir)[0]["dev"][:args.max_eval_samples] if (args.data_dir or find_mrpc_dir(None)) else None
    out_dir = args.output_dir or os.path.join(args.path, "onnx")
    with claim_output_dir(out_dir), atomic_output_dir(out_dir) as staging:
        report = export_and_report(model_dir, staging, dev_rows, MRPC_DEMO_PAIRS + [tuple(p) for p in args.pair],
                                   runs=args.runs, speed=not args.no_speed)
    print(format_report(report))
    print(f"\nONNX models and onnx_report.json in {out_dir}")


def console() -> int:
    """The `tfprune-export` command."""
    return run(main)
