"""The FOR.ai pruning challenge on tfprune: weight vs unit pruning of a 784-1000-1000-500-200-10 ReLU MLP.

Trains the network once, prunes it one-shot to k % per hidden layer by weight magnitude and by unit (column
L2 norm) for every k, evaluates test accuracy, optionally fine-tunes with gradual pruning, and measures the
real speed that the sparsity buys (compacted network for units, sparse matmul for weights).

    python mnist_challenge.py                       # Fashion-MNIST from Debian's dataset-fashion-mnist
    python mnist_challenge.py --finetune-epochs 2   # also the recovery curves
"""
from __future__ import annotations

import csv
import os

from tfprune import cli

DEFAULT_KS = "0,25,50,60,70,80,90,95,97,99"


def parse_ks(text: str) -> list[int]:
    ks = cli.comma_separated(text, int, f"--ks must be comma-separated integers, got {text!r}")
    bad = [k for k in ks if not 0 <= k < 100]
    if bad or not ks:
        raise cli.UsageError(f"--ks values must be in [0, 100), got {bad or text!r}")
    return ks


def build_parser():
    p = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    cli.add_image_data_arguments(p)
    p.add_argument("--output-dir", default="logs/mnist_challenge", help="results, plot, TensorBoard (default: %(default)s)")
    p.add_argument("--ks", default=DEFAULT_KS, help="pruning percentages, each in [0, 100) (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam, cosine-decayed (default: %(default)s)")
    p.add_argument("--l1", type=float, default=5e-6, help="L1 penalty on hidden kernels (default: %(default)s)")
    p.add_argument("--group", type=float, default=2e-4, help="group-lasso penalty on hidden units (default: %(default)s)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout after hidden layers, training only")
    p.add_argument("--finetune-epochs", type=int, default=0, help="recovery: gradual pruning to each k while "
                   "training this many epochs (0: one-shot only, the challenge)")
    p.add_argument("--speed-runs", type=int, default=20, help="timed runs per latency (median; default: %(default)s)")
    p.add_argument("--no-speed", action="store_true", help="skip the latency table")
    p.add_argument("--export-onnx", action="store_true", help="export the dense network and the 90 %% weight- and "
                   "unit-pruned ones to ONNX (parity and zeros checked) in <output-dir>/onnx")
    p.add_argument("--seed", type=int, default=42)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    ks = parse_ks(args.ks)
    cli.require_positive(args, "epochs", "batch_size", "speed_runs", "max_train_samples", "max_test_samples")
    if args.finetune_epochs < 0:
        raise cli.UsageError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    if not 0.0 < args.learning_rate < float("inf"):
        raise cli.UsageError(f"--learning-rate must be a finite number > 0, got {args.learning_rate}")
    for name in ("l1", "group"):
        if not 0.0 <= getattr(args, name) < float("inf"):
            raise cli.UsageError(f"--{name} must be a finite number >= 0, got {getattr(args, name)}")
    if not 0.0 <= args.dropout < 1.0:
        raise cli.UsageError(f"--dropout must be in [0, 1), got {args.dropout}")

    from tfprune.tasks.images import load_train_test

    (x, y), (x_test, y_test), source = load_train_test(args.dataset, args.data_dir, args.max_train_samples,
                                                       args.max_test_samples)

    import numpy as np
    import tensorflow as tf

    from tfprune import challenge, compaction, latency, plots
    from tfprune._keras import keras

    clock = cli.Stopwatch()
    with cli.claim_output_dir(args.output_dir), cli.atomic_output_dir(args.output_dir) as out:
        print(f"data: {args.dataset} from {source}: {len(x)} train / {len(x_test)} test images")
        dense = challenge.train_dense(x, y, args.epochs, args.batch_size, args.learning_rate, args.seed, args.dropout,
                                      args.l1, args.group,
                                      callbacks=[keras.callbacks.TensorBoard(os.path.join(out, "tensorboard", "train"))],
                                      verbose=2)
        train_seconds = clock.seconds
        writer = tf.summary.create_file_writer(os.path.join(out, "tensorboard", "sweep"))

        rows, models = [], {}
        for method in challenge.METHODS:
            for k in ks:
                model = challenge.one_shot(dense, method, k)
                rows.append(_row(challenge, model, method, k, False, x_test, y_test))
                models[method, k] = model
                if args.finetune_epochs:
                    tuned = challenge.fine_tune(dense, method, k, x, y, args.finetune_epochs, args.batch_size,
                                                args.learning_rate / 10)
                    rows.append(_row(challenge, tuned, method, k, True, x_test, y_test))
        with writer.as_default():
            for r in rows:
                tag = f"{r['method']}_{'finetuned' if r['fine_tuned'] else 'oneshot'}"
                tf.summary.scalar(f"accuracy/{tag}", r["accuracy"], step=r["k"])
                tf.summary.scalar(f"sparsity_total/{tag}", r["sparsity_total"], step=r["k"])
        writer.flush()

        # Unit pruning made real: the compacted network must compute the masked network's logits.
        compacted_rows, compacted = [], {}
        for k in ks:
            kernels = [v.numpy() for v in challenge.network_kernels(models["unit", k])]
            compact = compacted[k] = compaction.compact_kernels(kernels)
            gap = float(np.abs(latency.dense_forward(compact)(x_test[:512]).numpy()
                               - models["unit", k].predict(x_test[:512], verbose=0)).max())
            compacted_rows.append({"k": k, "hidden_units": [c.shape[1] for c in compact[:-1]], "max_abs_logit_diff": gap})

        speed_rows = [] if args.no_speed else _speed_table(challenge, latency, dense, models, compacted, x_test,
                                                           args.speed_runs)

        onnx_rows = _export(challenge, dense, models, ks, x_test, os.path.join(out, "onnx")) if args.export_onnx else []

        results = {"arguments": vars(args), "data_source": source, "train_images": len(x), "test_images": len(x_test),
                   "dense_accuracy": challenge.accuracy(dense, x_test, y_test), "train_seconds": train_seconds,
                   "rows": rows, "compaction": compacted_rows, "onnx": onnx_rows, "wall_seconds": clock.seconds}
        cli.write_json(os.path.join(out, "results.json"), results)
        with open(os.path.join(out, "results.csv"), "w", newline="") as handle:
            writer_csv = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer_csv.writeheader()
            writer_csv.writerows(rows)
        title = f"{args.dataset}: weight vs unit pruning of the FOR.ai MLP"
        plots.sparsity_vs_accuracy(rows, os.path.join(out, "sparsity_vs_accuracy.png"), title)
        if speed_rows:
            cli.write_json(os.path.join(out, "speedup.json"), {"runs": args.speed_runs, "rows": speed_rows})

    print(accuracy_table(rows))
    if speed_rows:
        print(speed_table(speed_rows))
    print(f"\ndense accuracy {100 * results['dense_accuracy']:.2f} %; wall time {clock.seconds:.0f} s; "
          f"outputs in {args.output_dir}")


def _row(challenge, model, method, k, fine_tuned, x_test, y_test) -> dict:
    prunable, total = challenge.measured_sparsity(model)
    return {"method": method, "k": k, "fine_tuned": fine_tuned, "sparsity_prunable": prunable,
            "sparsity_total": total, "accuracy": challenge.accuracy(model, x_test, y_test)}


def _speed_table(challenge, latency, dense, models, compacted, x_test, runs) -> list[dict]:
    """Latency (median ms) per k at batch 1 and 256: dense, masked, sparse (weight), compacted (unit:
    `compacted` holds the compacted kernels per k)."""
    from tfprune import prunable_layers

    dense_kernels = [v.numpy() for v in challenge.network_kernels(dense)]
    rows = []
    for batch in (1, 256):
        x = x_test[:batch]
        dense_ms = latency.median_latency_ms(latency.dense_forward(dense_kernels), x, runs)
        for k, compact in compacted.items():
            weight = models["weight", k]
            weight_kernels = [v.numpy() for v in challenge.network_kernels(weight)]
            masks = [layer.mask.numpy() for layer in prunable_layers(weight)]
            row = {"batch": batch, "k": k, "dense_ms": dense_ms,
                   "masked_ms": latency.median_latency_ms(latency.masked_forward(weight_kernels, masks), x, runs),
                   "sparse_ms": latency.median_latency_ms(latency.sparse_forward(weight_kernels), x, runs),
                   "compacted_ms": latency.median_latency_ms(latency.dense_forward(compact), x, runs)}
            row["sparse_speedup"] = dense_ms / row["sparse_ms"]
            row["compacted_speedup"] = dense_ms / row["compacted_ms"]
            rows.append(row)
    return rows


def _export(challenge, dense, models, ks, x_test, folder) -> list[dict]:
    """Dense and (if swept) 90 % weight/unit-pruned networks, stripped, through tf2onnx with parity."""
    from tfprune.export import export_keras_checked
    from tfprune.strip import strip_model

    os.makedirs(folder, exist_ok=True)
    candidates = [("dense", dense)] + [(f"{m}{90}", strip_model(models[m, 90])) for m in challenge.METHODS if 90 in ks]
    rows = []
    for name, model in candidates:
        row = export_keras_checked(model, os.path.join(folder, f"{name}.onnx"), x_test[:256])
        rows.append({"model": name, **row})
        print(f"ONNX {name}: max |Δlogit| {row['max_abs_logit_diff']:.1e}, zeros {row['zeros']:,}, "
              f"{row['bytes'] / 1e6:.2f} MB ({row['gzip_bytes'] / 1e6:.2f} MB gzip)")
    return rows


def accuracy_table(rows: list[dict]) -> str:
    return cli.markdown_table(
        ["method", "k %>", "fine-tuned", "sparsity (prunable) %>", "sparsity (whole net) %>", "test accuracy %>"],
        [[r["method"], r["k"], "yes" if r["fine_tuned"] else "no", f"{100 * r['sparsity_prunable']:.2f}",
          f"{100 * r['sparsity_total']:.2f}", f"{100 * r['accuracy']:.2f}"] for r in rows])


def speed_table(rows: list[dict]) -> str:
    return cli.markdown_table(
        ["batch>", "k %>", "dense ms>", "masked ms>", "sparse ms (weight)>", "compacted ms (unit)>",
         "sparse speedup>", "compacted speedup>"],
        [[r["batch"], r["k"], f"{r['dense_ms']:.3f}", f"{r['masked_ms']:.3f}", f"{r['sparse_ms']:.3f}",
          f"{r['compacted_ms']:.3f}", f"{r['sparse_speedup']:.2f}x", f"{r['compacted_speedup']:.2f}x"] for r in rows])


def console() -> int:
    """The `tfprune-mnist-challenge` command."""
    return cli.run(main)
