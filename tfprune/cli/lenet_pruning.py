"""LeNet-5 on Fashion-MNIST (or MNIST): one-shot, gradual and ADMM pruning, irregular and filter, across
sparsities; nested masks (one model, several levels); filter-pruned models compacted and timed.

Trains the dense network once; every pruning run starts from it and trains the same number of epochs
(--prune-epochs). Irregular runs rank all five kernels together; filter runs remove that fraction of every
layer's filters and units (the logits excepted) and are compacted into a narrower LeNet-5 with the same
outputs, timed against the dense one (interleaved). With --distill every pruning run learns the dense
model's outputs besides the labels. Writes results.json (one row per run: method, pattern,
sparsity, accuracy...), results.csv, a table and sparsity_vs_accuracy.png.

    python lenet_pruning.py                              # the full sweep (about 30 min on 2 CPU cores)
    python lenet_pruning.py --epochs 2 --max-train-samples 5000 --sparsities 0.9 --nested-levels ""
"""
from __future__ import annotations

import csv
import math
import os

from tfprune import cli

DENSE_FILE = "dense_weights.npz"


def parse_fractions(text: str, flag: str) -> list[float]:
    values = cli.comma_separated(text, float, f"{flag} must be comma-separated numbers, got {text!r}")
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad:
        raise cli.UsageError(f"{flag} values must be in [0, 1), got {bad}")
    if len(set(values)) != len(values):
        raise cli.UsageError(f"{flag} repeats a value: {text!r}")
    return values


def parse_choices(text: str, flag: str, allowed) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise cli.UsageError(f"{flag} must list some of {list(allowed)}, got {text!r}")
    return values


def build_parser():
    p = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    cli.add_image_data_arguments(p)
    p.add_argument("--output-dir", default="logs/lenet", help="results, table, plot (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=20, help="dense training epochs (default: %(default)s)")
    p.add_argument("--dense-from", metavar="DIR", help="take the dense model from an earlier run's output folder "
                   "(its dense_weights.npz) instead of training it: other pruning runs from the same model")
    p.add_argument("--prune-epochs", type=int, default=10,
                   help="epochs of every pruning run, whatever its method (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam, cosine-decayed in every run (default: %(default)s)")
    p.add_argument("--methods", default="oneshot,gradual,admm", help="of oneshot, gradual, admm (default: %(default)s)")
    p.add_argument("--patterns", default="irregular,filter", help="of irregular, filter (default: %(default)s)")
    p.add_argument("--sparsities", default="0.5,0.7,0.9,0.95,0.98",
                   help="irregular: fractions of all weights pruned (default: %(default)s)")
    p.add_argument("--filter-sparsities", default="0.25,0.5,0.75",
                   help="filter: fractions of each layer's filters and units removed (default: %(default)s)")
    p.add_argument("--nested-levels", default="0.5,0.7,0.9,0.95",
                   help="levels of one nested model (empty: none); each compared with one-shot at that level "
                   "(default: %(default)s)")
    p.add_argument("--admm-rho", type=float, default=1e-3, help="ADMM's initial rho (default: %(default)s)")
    p.add_argument("--admm-rho-growth", type=float, default=1.1, help="rho's factor per ADMM iteration (default: %(default)s)")
    p.add_argument("--admm-rho-max", type=float, default=1.0, help="rho's ceiling (default: %(default)s)")
    p.add_argument("--admm-iterations", type=int, default=30, help="Z/U updates (default: %(default)s)")
    p.add_argument("--admm-fraction", type=float, default=0.5,
                   help="share of --prune-epochs under the ADMM penalty, the rest masked retraining (default: %(default)s)")
    p.add_argument("--distill", action="store_true", help="every pruning run (and nested level) learns the dense "
                   "model's outputs besides the labels (knowledge distillation; the same epochs)")
    p.add_argument("--distill-alpha", type=float, default=0.5, help="with --distill: weight of the hard-label "
                   "loss; the dense model's soft labels get 1 - alpha (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=2.0, help="with --distill: softmax temperature of the "
                   "soft labels (default: %(default)s)")
    p.add_argument("--speed-iterations", type=int, default=200, help="interleaved timing rounds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42)
    return p


def check_args(args):
    """Every flag checked before any data is read or any training step runs."""
    cli.require_positive(args, "epochs", "prune_epochs", "batch_size", "admm_iterations", "speed_iterations",
                         "max_train_samples", "max_test_samples")
    methods = parse_choices(args.methods, "--methods", ("oneshot", "gradual", "admm"))
    patterns = parse_choices(args.patterns, "--patterns", ("irregular", "filter"))
    sparsities = parse_fractions(args.sparsities, "--sparsities")
    filter_sparsities = parse_fractions(args.filter_sparsities, "--filter-sparsities")
    levels = parse_fractions(args.nested_levels, "--nested-levels")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise cli.UsageError(f"--learning-rate must be a finite number > 0, got {args.learning_rate}")
    cli.check_admm_knobs(args)
    if not 0 < args.admm_fraction < 1:
        raise cli.UsageError(f"--admm-fraction must be in (0, 1), got {args.admm_fraction}")
    cli.check_distillation_knobs(args)
    if "admm" in methods and args.prune_epochs < 2:
        raise cli.UsageError("ADMM needs --prune-epochs >= 2 (ADMM epochs, then masked retraining)")
    if args.dense_from is not None and not os.path.isfile(os.path.join(args.dense_from, DENSE_FILE)):
        raise cli.UsageError(f"--dense-from {args.dense_from}: no {DENSE_FILE} there (a lenet_pruning.py output "
                             "folder holds one)")
    return methods, patterns, sparsities, filter_sparsities, levels


def load_dense(folder: str):
    """The dense LeNet-5 an earlier run saved in `folder`; a UsageError when the file is not one."""
    import numpy as np

    from tfprune.models.lenet import build_lenet5

    model = build_lenet5()
    try:
        with np.load(os.path.join(folder, DENSE_FILE)) as saved:
            model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    except (OSError, ValueError, KeyError) as error:
        raise cli.UsageError(f"--dense-from {folder}: {DENSE_FILE} is not a LeNet-5's weights ({error})") from None
    return model


def main(argv=None):
    args = build_parser().parse_args(argv)
    methods, patterns, sparsities, filter_sparsities, levels = check_args(args)

    from tfprune.tasks.images import load_train_test

    (x, y), (x_test, y_test), source = load_train_test(args.dataset, args.data_dir, args.max_train_samples,
                                                       args.max_test_samples)

    import numpy as np

    from tfprune import lenet_sweep as sweep
    from tfprune import plots
    from tfprune.challenge import accuracy
    from tfprune.models.lenet import compact_lenet

    dense = load_dense(args.dense_from) if args.dense_from else None  # a bad file: refused before any output
    clock = cli.Stopwatch()
    with cli.claim_output_dir(args.output_dir), cli.atomic_output_dir(args.output_dir) as out:
        print(f"data: {args.dataset} from {source}: {len(x)} train / {len(x_test)} test images")
        if dense is None:
            dense = sweep.train_dense(x, y, args.epochs, args.batch_size, args.learning_rate, args.seed)
        np.savez(os.path.join(out, DENSE_FILE), *dense.get_weights())
        dense_accuracy = accuracy(dense, x_test, y_test)
        print(f"dense: {100 * dense_accuracy:.2f} % " + (f"(from {args.dense_from})" if args.dense_from else
                                                         f"after {args.epochs} epochs ({clock.seconds:.0f} s)"))
        rows = [{"method": "dense", "pattern": "none", "sparsity": 0.0, "measured_sparsity": 0.0,
                 "accuracy": dense_accuracy, "epochs": None if args.dense_from else args.epochs}]
        targets, loss, distillation = y, None, None
        if args.distill:  # the dense model's logits computed once: it is the same teacher for every run
            from tfprune.distillation import distillation_loss, teacher_targets

            targets = teacher_targets(y, dense.predict(x, batch_size=1000, verbose=0))
            loss = distillation_loss(args.distill_alpha, args.temperature)
            distillation = {"teacher": "the dense model", "alpha": args.distill_alpha,
                            "temperature": args.temperature}
        admm_options = {"rho": args.admm_rho, "rho_growth": args.admm_rho_growth, "rho_max": args.admm_rho_max,
                        "iterations": args.admm_iterations, "fraction": args.admm_fraction}
        filtered = {}
        for pattern in patterns:
            for method in methods:
                for sparsity in sparsities if pattern == "irregular" else filter_sparsities:
                    model, row = sweep.prune_run(dense, method, pattern, sparsity, x, targets, args.prune_epochs,
                                                 args.batch_size, args.learning_rate, args.seed, admm_options, loss)
                    row["accuracy"] = accuracy(model, x_test, y_test)
                    rows.append(row)
                    if pattern == "filter":
                        filtered[method, sparsity] = model
                    print(f"{method:8s} {pattern:9s} {100 * sparsity:5.1f} %: accuracy {100 * row['accuracy']:.2f} % "
                          f"(sparsity measured {100 * row['measured_sparsity']:.2f} %, {row['seconds']:.0f} s)")

        own = {r["sparsity"]: r for r in rows if r["method"] == "oneshot" and r["pattern"] == "irregular"}
        nested_rows = []
        if levels:
            model, nested = sweep.nested_run(dense, levels, x, targets, args.prune_epochs, args.batch_size,
                                             args.learning_rate, args.seed, loss)
            for level in nested.levels:
                if level not in own:  # the comparison: the same level pruned on its own, same epochs
                    alone, row = sweep.prune_run(dense, "oneshot", "irregular", level, x, targets, args.prune_epochs,
                                                 args.batch_size, args.learning_rate, args.seed, loss=loss)
                    row["accuracy"] = accuracy(alone, x_test, y_test)
                    own[level] = row
                nested.set_level(level)
                row = {"method": "nested", "pattern": "irregular", "sparsity": level,
                       "measured_sparsity": sweep.kernel_sparsity(model), "accuracy": accuracy(model, x_test, y_test),
                       "epochs": args.prune_epochs, "alone_accuracy": own[level]["accuracy"]}
                nested_rows.append(row)
                print(f"nested   level {100 * level:5.1f} %: accuracy {100 * row['accuracy']:.2f} % "
                      f"(pruned on its own: {100 * row['alone_accuracy']:.2f} %)")
            rows += nested_rows
            state = nested.state()
            np.savez_compressed(os.path.join(out, "nested_model.npz"), levels=np.array(state["levels"]),
                                **{f"weights_{i}": w for i, w in enumerate(state["weights"])},
                                **{f"level_of_{i}": lv for i, lv in enumerate(state["level_of"])},
                                **{f"bias_{i}_level_{j}": bias for j, level in enumerate(state["biases"])
                                   for i, bias in enumerate(level) if bias is not None})

        compact_rows = []
        for (method, sparsity), model in filtered.items():
            compact, widths = compact_lenet(model)
            gap = float(np.abs(compact.predict(x_test[:1000], verbose=0) - model.predict(x_test[:1000], verbose=0)).max())
            row = {"method": method, "sparsity": sparsity, "widths": widths, "max_abs_logit_diff": gap,
                   "parameters": compact.count_params(), "parameters_dense": dense.count_params()}
            for batch in (1, 256):
                row[f"batch{batch}"] = sweep.time_against_dense(dense, compact, x_test[:batch], args.speed_iterations)
            compact_rows.append(row)

        results = {"arguments": vars(args), "data_source": source, "train_images": len(x), "test_images": len(x_test),
                   "dense_accuracy": dense_accuracy, "distillation": distillation, "rows": rows,
                   "compaction": compact_rows,
                   "wall_seconds": clock.seconds}
        cli.write_json(os.path.join(out, "results.json"), results)
        fields = ["method", "pattern", "sparsity", "measured_sparsity", "accuracy", "epochs"]
        with open(os.path.join(out, "results.csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        plots.lenet_sparsity_vs_accuracy(rows, os.path.join(out, "sparsity_vs_accuracy.png"),
                                         f"{args.dataset}: LeNet-5 pruned, {args.prune_epochs} epochs per run")

    print(accuracy_table(rows))
    if compact_rows:
        print(compaction_table(compact_rows))
    print(f"\nwall time {clock.seconds:.0f} s; outputs in {args.output_dir}")


def accuracy_table(rows: list[dict]) -> str:
    return cli.markdown_table(
        ["method", "pattern", "sparsity %>", "measured sparsity %>", "test accuracy %>", "alone %>"],
        [[r["method"], r["pattern"], f"{100 * r['sparsity']:.1f}", f"{100 * r['measured_sparsity']:.2f}",
          f"{100 * r['accuracy']:.2f}", f"{100 * r['alone_accuracy']:.2f}" if "alone_accuracy" in r else ""]
         for r in rows])


def compaction_table(rows: list[dict]) -> str:
    return cli.markdown_table(
        ["method", "filters/units removed %>", "widths", "parameters>", "max abs Δlogit>", "batch 1 speed-up>",
         "batch 256 speed-up>"],
        [[r["method"], f"{100 * r['sparsity']:.0f}", "-".join(map(str, r["widths"])),
          f"{r['parameters']:,} of {r['parameters_dense']:,}", f"{r['max_abs_logit_diff']:.1e}",
          f"{r['batch1']['speedup']:.2f}x", f"{r['batch256']['speedup']:.2f}x"] for r in rows])


def console() -> int:
    """The `tfprune-lenet-pruning` command."""
    return cli.run(main)
