"""Fine-tune TFBertForSequenceClassification on GLUE MRPC while gradually pruning its feed-forward layers.

Every encoder layer's FFN kernels (intermediate.dense, the H->4H up-projection, and output.dense, the
4H->H down-projection) are wrapped in tfprune's PrunableDense and pruned on the Zhu & Gupta schedule by the
GradualPruningCallback, counted in optimizer steps. Dev accuracy/F1 after each epoch, TensorBoard scalars,
a % non-zero plot, results.json, and the stripped model in Hugging Face layout (reloads without tfprune).

    python train_mrpc.py --final-sparsity 0.7                    # data from $GLUE_DIR/MRPC or --data-dir
    python train_mrpc.py --final-sparsity 0 --run-name dense     # the dense baseline (no wrappers)
    python train_mrpc.py --summary                               # BERT's parameter counts, then exit
"""
from __future__ import annotations

import json
import os

from tfprune import cli


def build_parser():
    p = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="bert-base-uncased", help="Hub name or local Hugging Face folder (default: "
                   "%(default)s; offline and not cached: the packaged all-MiniLM-L6-v2, with a warning)")
    g.add_argument("--data-dir", help="GLUE MRPC folder with train.tsv and dev.tsv (default: $GLUE_DIR/MRPC, "
                   "then data/glue/MRPC, then tfds glue/mrpc)")
    g.add_argument("--max-seq-length", type=int, default=128)
    g.add_argument("--max-train-samples", type=int, help="first N training pairs only (quick runs)")
    g.add_argument("--max-eval-samples", type=int, help="first N dev pairs only (quick runs)")
    g = p.add_argument_group("training (defaults of Hugging Face's text-classification example)")
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--learning-rate", type=float, default=2e-5, help="AdamW, linear decay to 0 (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--warmup-ratio", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=42)
    g = p.add_argument_group("pruning (Zhu & Gupta schedule)")
    g.add_argument("--final-sparsity", type=cli.sparsity_arg, default=0.7, help="0 trains the dense baseline, "
                   "without wrappers (default: %(default)s)")
    g.add_argument("--initial-sparsity", type=cli.sparsity_arg, default=0.0)
    g.add_argument("--begin-step", type=int, default=0)
    g.add_argument("--end-step", type=int, help="default: two thirds of the training steps")
    g.add_argument("--frequency", type=int, default=10, help="mask update every N steps (default: %(default)s)")
    g.add_argument("--exponent", type=float, default=3.0)
    g.add_argument("--pattern", default="unstructured", help="unstructured, block, unit, row or nm")
    g.add_argument("--block-size", type=int, default=4, help="for --pattern block: 2, 4, 8, ...")
    g.add_argument("--nm", default="2:4", help="for --pattern nm (default: %(default)s)")
    g.add_argument("--prune-scope", default="ffn", help="ffn (default), attention or all")
    g.add_argument("--global-ranking", action="store_true", help="one ranking across all pruned tensors")
    g.add_argument("--schedule-config", help="JSON file with any of the pruning flags above (underscored keys), "
                   "e.g. {\"final_sparsity\": 0.8, \"pattern\": \"block\", \"block_size\": 8}")
    g = p.add_argument_group("outputs")
    g.add_argument("--output-dir", help="default: logs/mrpc/<run-name>")
    g.add_argument("--run-name", help="default: <pattern>-<final sparsity>, or dense")
    g.add_argument("--log-every", type=int, default=10, help="TensorBoard scalars every N steps")
    g.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint (same settings)")
    g.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N optimizer steps "
                   "(default: after every epoch only)")
    g.add_argument("--summary", action="store_true", help="print the model's parameter summary and exit")
    g.add_argument("--export-onnx", action="store_true", help="export the stripped model to ONNX at the end "
                   "(parity checked; see python -m tfprune.export)")
    return p


SCHEDULE_KEYS = {"final_sparsity", "initial_sparsity", "begin_step", "end_step", "frequency", "exponent", "pattern",
                 "block_size", "nm", "prune_scope", "global_ranking"}


def apply_schedule_config(args, parser) -> None:
    """The file's settings over the flags', each read as its flag reads it (a string where a number
    belongs is an error naming the key)."""
    if not args.schedule_config:
        return
    try:
        with open(args.schedule_config) as handle:
            config = json.load(handle)
    except FileNotFoundError:
        raise cli.UsageError(f"--schedule-config {args.schedule_config} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise cli.UsageError(f"--schedule-config {args.schedule_config}: invalid JSON ({error})") from None
    if not isinstance(config, dict):
        raise cli.UsageError(f"--schedule-config {args.schedule_config}: expected a JSON object of settings")
    unknown = sorted(set(config) - SCHEDULE_KEYS)
    if unknown:
        raise cli.UsageError(f"--schedule-config: unknown key(s) {unknown}; allowed: {sorted(SCHEDULE_KEYS)}")
    actions = {action.dest: action for action in parser._actions}
    for key, value in config.items():
        action = actions[key]
        if action.type is None and action.const is True:  # a store_true flag
            if not isinstance(value, bool):
                raise cli.UsageError(f"--schedule-config: {key} must be true or false, got {value!r}")
        elif isinstance(value, (dict, list, bool)) or value is None:
            raise cli.UsageError(f"--schedule-config: {key} must be a single value, got {value!r}")
        else:
            convert = action.type or str
            kind = {int: "an integer", float: "a number"}.get(convert)
            try:
                value = convert(str(value))
            except ValueError:
                raise cli.UsageError(f"--schedule-config: {key} must be {kind or 'a valid value'}, got {value!r}") from None
            except cli.argparse.ArgumentTypeError as error:
                raise cli.UsageError(f"--schedule-config: {key}: {error}") from None
        setattr(args, key, value)


# Flags that change what a run computes: a checkpoint resumes only under the same values.
RESUME_INDEPENDENT = {"output_dir", "run_name", "resume", "checkpoint_every", "export_onnx", "summary"}


def run_settings(args) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in RESUME_INDEPENDENT}


def check_ranges(args) -> None:
    """Every numeric flag within what it means, before anything is loaded."""
    cli.require_positive(args, "epochs", "batch_size", "frequency", "max_train_samples", "max_eval_samples")
    if args.checkpoint_every < 0:
        raise cli.UsageError(f"--checkpoint-every must be >= 0 (0: after every epoch only), got {args.checkpoint_every}")
    if args.log_every < 0:
        raise cli.UsageError(f"--log-every must be >= 0 (0: only at mask updates), got {args.log_every}")
    if args.max_seq_length < 8:
        raise cli.UsageError(f"--max-seq-length must be >= 8 (room for [CLS], two [SEP] and both sentences), "
                             f"got {args.max_seq_length}")
    if not 0.0 <= args.warmup_ratio <= 1.0:
        raise cli.UsageError(f"--warmup-ratio must be in [0, 1], got {args.warmup_ratio}")
    if not 0.0 < args.learning_rate < float("inf"):
        raise cli.UsageError(f"--learning-rate must be a finite number > 0, got {args.learning_rate}")
    if not 0.0 <= args.weight_decay < float("inf"):
        raise cli.UsageError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.begin_step < 0 or (args.end_step is not None and args.end_step <= args.begin_step):
        raise cli.UsageError(f"--begin-step must be >= 0 and < --end-step, got {args.begin_step} and {args.end_step}")


def pattern_from_args(args):
    from tfprune.criteria import Pattern, parse_nm

    n, m = parse_nm(args.nm) if args.pattern == "nm" else (2, 4)
    return Pattern(args.pattern, block_size=args.block_size, n=n, m=m)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_schedule_config(args, parser)
    check_ranges(args)
    pattern = pattern_from_args(args)
    from tfprune.models import bert

    if args.prune_scope not in bert.SCOPES:  # before the data and the model are loaded
        raise cli.UsageError(f"--prune-scope must be one of {list(bert.SCOPES)}, got {args.prune_scope!r}")
    dense_run = args.final_sparsity == 0 and args.initial_sparsity == 0
    run_name = args.run_name or ("dense" if dense_run else f"{pattern.name}-{args.final_sparsity:g}")
    output_dir = args.output_dir or os.path.join("logs", "mrpc", run_name)
    if args.summary:
        _summary(args)
        return
    with cli.claim_output_dir(output_dir):
        _train(args, pattern, dense_run, run_name, output_dir)


def _summary(args) -> None:
    from tfprune.models import bert

    model, _, _ = bert.load_classifier(args.model, seed=args.seed)
    print(bert.format_summary(bert.weight_summary(model)))


def _train(args, pattern, dense_run: bool, run_name: str, output_dir: str) -> None:
    from tfprune.models import bert
    from tfprune.tasks.glue import PairBatches, as_keras_sequence, load_mrpc

    data, data_source = load_mrpc(args.data_dir)
    model, tokenizer, model_used = bert.load_classifier(args.model, seed=args.seed)

    import tensorflow as tf
    from transformers import create_optimizer

    from tfprune import plots
    from tfprune._keras import keras
    from tfprune.callbacks import GradualPruningCallback
    from tfprune.report import format_report, sparsity_report, zero_fraction
    from tfprune.schedules import PolynomialDecay, to_dict
    from tfprune.strip import strip_model
    from tfprune.training import EvalAndLog, RunCheckpoint, evaluate

    keras.utils.set_random_seed(args.seed)
    train_rows = data["train"][:args.max_train_samples]
    dev_rows = data["dev"][:args.max_eval_samples]
    train = PairBatches(tokenizer, train_rows, args.batch_size, args.max_seq_length, shuffle=True, seed=args.seed)
    dev = PairBatches(tokenizer, dev_rows, 64, args.max_seq_length)
    total_steps = len(train) * args.epochs
    end_step = args.end_step if args.end_step is not None else max(args.begin_step + 1, (2 * total_steps) // 3)
    schedule = None if dense_run else PolynomialDecay(args.initial_sparsity, args.final_sparsity, args.begin_step,
                                                      end_step, args.frequency, args.exponent)
    wrappers = [] if dense_run else bert.inject(model, args.prune_scope, pattern)

    optimizer, _ = create_optimizer(args.learning_rate, total_steps, int(args.warmup_ratio * total_steps),
                                    weight_decay_rate=args.weight_decay)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
    logger = EvalAndLog(writer, dev, args.log_every)
    pruning = None
    if schedule:
        pruning = GradualPruningCallback(schedule, global_ranking=args.global_ranking, log_every=args.log_every,
                                         layers=wrappers, writer=writer)
    checkpoints = RunCheckpoint(os.path.join(output_dir, "checkpoints"), run_settings(args), args.checkpoint_every,
                                lambda: {"evaluations": logger.evaluations,
                                         "nonzero_history": pruning.history if pruning else []})
    initial_epoch = done_in_epoch = 0
    if args.resume:
        initial_epoch, done_in_epoch, history = checkpoints.restore(model)
        logger.evaluations = history.get("evaluations", [])
        if pruning is not None:
            pruning.history = history.get("nonzero_history", [])
    else:
        checkpoints.clear()
    for _ in range(initial_epoch):  # the data order the finished epochs left (Keras starts a fresh Sequence)
        train.on_epoch_end()
    print(f"model: {model_used}; data: {data_source} ({len(train_rows)} train / {len(dev_rows)} dev pairs); "
          f"{total_steps} steps; " + (f"pruning {len(wrappers)} tensors ({args.prune_scope}, {pattern.name}) to "
                                      f"{args.final_sparsity:.0%} by step {end_step}" if wrappers else "dense"))

    clock = cli.Stopwatch()
    with cli.atomic_output_dir(output_dir) as out:
        callbacks = ([pruning] if pruning else []) + [logger, checkpoints]  # the checkpoint sees both logs
        fit_clock = cli.Stopwatch()
        if done_in_epoch and initial_epoch < args.epochs:  # killed mid-epoch: that epoch's remaining batches
            checkpoints.offset = done_in_epoch
            model.fit(as_keras_sequence(train, skip=done_in_epoch), epochs=initial_epoch + 1,
                      initial_epoch=initial_epoch, callbacks=callbacks, verbose=1, shuffle=False)
            initial_epoch += 1
        model.fit(as_keras_sequence(train), epochs=args.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  verbose=1, shuffle=False)
        train_seconds = fit_clock.seconds
        final = evaluate(model, dev)
        pruned = sparsity_report(model, only_pruned=True) if wrappers else None
        strip_model(model)
        ffn_sparsity = zero_fraction(bert.ffn_kernels(model))
        encoder_sparsity = zero_fraction([w for w in model.weights if "/encoder/" in w.name and len(w.shape) == 2])
        model_dir = os.path.join(out, "model")
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        if pruning is not None and pruning.history:
            plots.nonzero_vs_step(pruning.history, os.path.join(out, "nonzero_vs_step.png"),
                                  f"MRPC, {model_used}: % non-zero per pruned tensor")
        results = {
            "model": model_used, "data": data_source, "run_name": run_name, "pattern": pattern.to_dict(),
            "prune_scope": args.prune_scope if wrappers else None, "final_sparsity_asked": args.final_sparsity,
            "schedule": to_dict(schedule) if schedule else None,
            "measured_ffn_sparsity": ffn_sparsity, "measured_encoder_sparsity": encoder_sparsity,
            "measured_pruned_sparsity": 1 - pruned["total"]["nonzero_pct"] / 100 if pruned else 0.0,
            "eval_accuracy": final["accuracy"], "eval_f1": final["f1"], "evaluations": logger.evaluations,
            "train_seconds": train_seconds, "pruning_callback_seconds": pruning.seconds if pruning else 0.0,
            "steps": int(model.optimizer.iterations.numpy()), "train_pairs": len(train_rows), "eval_pairs": len(dev_rows),
            "seed": args.seed, "arguments": vars(args), "pruned_tensors": pruned["tensors"] if pruned else [],
        }
        if pruning is not None:
            results["nonzero_history"] = pruning.history
        if args.export_onnx:
            from tfprune.export.bert_report import export_and_report
            from tfprune.export.bert_report import format_report as format_onnx_report
            from tfprune.tasks.glue import MRPC_DEMO_PAIRS

            results["onnx"] = export_and_report(model_dir, os.path.join(out, "onnx"), dev_rows, MRPC_DEMO_PAIRS,
                                                tokenizer, model=model)
            print(format_onnx_report(results["onnx"]))
        results["wall_seconds"] = clock.seconds
        cli.write_json(os.path.join(out, "results.json"), results)
    writer.close()
    if pruned:
        print("\n" + format_report(pruned))
    print(f"\ndev accuracy {100 * final['accuracy']:.2f} %, F1 {100 * final['f1']:.2f} %; FFN sparsity "
          f"{100 * ffn_sparsity:.2f} %; encoder sparsity {100 * encoder_sparsity:.2f} %; "
          f"train {train_seconds:.0f} s; outputs in {output_dir}")


def console() -> int:
    """The `tfprune-train-mrpc` command."""
    return cli.run(main)
