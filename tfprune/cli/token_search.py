"""Search a token pruning schedule for a fine-tuned BERT classifier: the per-layer rates that keep the dev
metric highest at a target speed-up (encoder FLOPs over the dev set's real lengths; or --flops-budget, the
share of the unpruned FLOPs to keep). The greedy search runs the pruner at inference only; the schedule it
prints and saves (search.json) is then fine-tuned with train_glue.py:

    tfprune-token-search --model logs/mrpc/dense --task mrpc --target-speedup 2
    python train_glue.py --task mrpc --init-from logs/mrpc/dense --token-pruning <the rates printed>
"""
from __future__ import annotations

import os

from tfprune import cli


def build_parser():
    from tfprune.tasks.glue_tasks import TASKS

    p = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a fine-tuned model of --task (a train_glue.py run or its model/)")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="the GLUE task")
    p.add_argument("--data-dir", help="the task's GLUE folder (default: $GLUE_DIR/<task>, data/glue/<task>)")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-speedup", type=float, help="encoder FLOPs speed-up to reach (> 1)")
    goal.add_argument("--flops-budget", type=cli.sparsity_arg, help="share of the unpruned encoder FLOPs to keep, "
                      "in (0, 1): 0.5 is a speed-up of 2")
    p.add_argument("--step", type=float, default=0.1, help="rate added to one layer per move (default: %(default)s)")
    p.add_argument("--max-rate", type=float, default=0.9, help="largest rate of any layer (default: %(default)s)")
    p.add_argument("--keep-sep", action="store_true", help="keep the [SEP] tokens as well as [CLS]")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--max-eval-samples", type=int, help="first N dev examples only (quick runs)")
    p.add_argument("--output-dir", help="default: logs/<task>/token-search-<target>")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.flops_budget is not None:
        if args.flops_budget == 0:
            raise cli.UsageError("--flops-budget must be > 0 (the share of the FLOPs kept)")
        args.target_speedup = 1.0 / args.flops_budget
    if not 1.0 < args.target_speedup < float("inf"):
        raise cli.UsageError(f"--target-speedup must be a finite number > 1, got {args.target_speedup:g}")
    if not 0.0 < args.step < 1.0 or not 0.0 < args.max_rate < 1.0:
        raise cli.UsageError(f"--step and --max-rate must lie in (0, 1), got {args.step:g} and {args.max_rate:g}")
    cli.require_positive(args, "max_eval_samples")
    from tfprune.cli.train_glue import fine_tuned_folder
    from tfprune.tasks.glue_tasks import get_task

    task = get_task(args.task)
    model_dir = fine_tuned_folder(args.model, "--model", task)
    output_dir = args.output_dir or os.path.join("logs", task.name, f"token-search-{args.target_speedup:g}x")
    with cli.claim_output_dir(output_dir):
        _search(args, task, model_dir, output_dir)


def _search(args, task, model_dir: str, output_dir: str) -> None:
    from tfprune.models import bert
    from tfprune.models.bert.token_pruning import flops_speedup
    from tfprune.models.bert.token_search import greedy_schedule
    from tfprune.tasks.glue import PairBatches, load_glue
    from tfprune.tasks.metrics import task_metrics
    from tfprune.training import evaluate

    data, data_source = load_glue(task, args.data_dir)
    dev_rows = data["dev"][:args.max_eval_samples]
    model, tokenizer, _ = bert.load_classifier(model_dir, num_labels=task.num_labels)
    dev = PairBatches(tokenizer, dev_rows, 64, args.max_seq_length, regression=task.is_regression)
    lengths = [len(ids) for ids in dev.features["input_ids"]]
    name = task.metrics[0]
    layers = len(bert.encoder_layers(model))

    def metric(rates):
        bert.apply_token_pruning(model, rates, args.keep_sep, tokenizer.sep_token_id)  # a new trace: one per call
        return evaluate(model, dev, lambda labels, p: task_metrics(task.metrics, labels, p), task.is_regression)[name]

    def speedup(rates):
        return flops_speedup(model, rates, lengths)

    def log(record):
        print(f"{','.join(f'{r:g}' for r in record['rates'])}: dev {name} {100 * record['metric']:.2f}, "
              f"{record['speedup']:.2f}x", flush=True)

    print(f"task: {task.name}; model: {model_dir}; data: {data_source} ({len(dev_rows)} dev examples); target "
          f"{args.target_speedup:.2f}x encoder FLOPs; {layers} layers")
    clock = cli.Stopwatch()
    found = greedy_schedule(metric, speedup, layers, args.target_speedup, args.step, args.max_rate, log)
    rates = ",".join(f"{r:g}" for r in found["rates"])
    with cli.atomic_output_dir(output_dir) as out:
        cli.write_json(os.path.join(out, "search.json"), {
            "task": task.name, "model": model_dir, "data": data_source, "dev_examples": len(dev_rows),
            "metric": name, "target_speedup": args.target_speedup, "keep_sep": args.keep_sep, "step": args.step,
            "max_rate": args.max_rate, "rates": found["rates"], "token_pruning": rates,
            "dev_metric": found["metric"], "flops_speedup": found["speedup"], "steps": found["steps"],
            "unpruned_dev_metric": found["steps"][0]["metric"], "seconds": clock.seconds})
    print(f"\nfound: --token-pruning {rates}\ndev {name} {100 * found['metric']:.2f} (unpruned "
          f"{100 * found['steps'][0]['metric']:.2f}) at {found['speedup']:.2f}x encoder FLOPs, pruner at inference "
          f"only; {clock.seconds:.0f} s; search.json in {output_dir}")


def console() -> int:
    """The `tfprune-token-search` command."""
    return cli.run(main)
