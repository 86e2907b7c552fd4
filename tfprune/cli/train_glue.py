"""Fine-tune a BERT classifier (TFBertForSequenceClassification) on a GLUE task while pruning it.

Three ways to a sparse model: gradual magnitude pruning during fine-tuning (Zhu & Gupta's schedule, the
default); prune-then-retrain (--init-from a fine-tuned model: pruned one-shot to the target, then retrained
with early stopping on the task's dev metric; with --gradual, pruned on the schedule while it trains on); ADMM
(--admm: epochs under a penalty that pulls the weights toward their sparse projection, a hard prune, masked
retraining); each with knowledge distillation from a fine-tuned teacher (--teacher). The pruned matrices: the
feed-forward pair of every encoder layer (--prune-scope ffn), query/key/value/attention output (attention), or
all six (all), with the same sparsity in every layer unless --global-ranking. Dev metrics after each epoch,
TensorBoard scalars, a % non-zero plot, results.json, and the stripped model in Hugging Face layout (reloads
without tfprune).

    python train_glue.py --task rte --final-sparsity 0.7
    python train_glue.py --task stsb --final-sparsity 0 --epochs 5      # dense (no wrappers); STS-B: regression
    python train_glue.py --task mrpc --prune-scope all --final-sparsity 0.9 --teacher logs/mrpc/dense/model
    python train_glue.py --task mrpc --init-from logs/mrpc/dense --final-sparsity 0.7 --epochs 10
    python train_glue.py --task mrpc --init-from logs/mrpc/dense --gradual --prune-scope all --final-sparsity 0.9 \
        --teacher logs/mrpc/dense --epochs 6
    python train_glue.py --task mrpc --admm --prune-scope all --final-sparsity 0.9 --epochs 4 --admm-epochs 2
    python train_glue.py --task mrpc --init-from logs/mrpc/dense --token-pruning 0,0.3,0.3,0.3,0.3,0

Token pruning (--token-pruning, one rate per layer) drops the least attended tokens after every layer with a
rate, during training and in the saved model; alone, or with any of the weight pruning above.
"""
from __future__ import annotations

import json
import os

from tfprune import cli
from tfprune.errors import TfpruneError

# Fine-tuning defaults by model. Hugging Face's run_glue defaults are tuned for bert-base-uncased; a model of
# the packaged all-MiniLM-L6-v2's shape (it, or a model fine-tuned from it) gets the values measured best
# for it on MRPC (docs/results/glue.md).
HF_DEFAULTS = {"epochs": 3, "learning_rate": 2e-5, "warmup_ratio": 0.0}
MINILM_DEFAULTS = {"epochs": 3, "learning_rate": 1e-4, "warmup_ratio": 0.1}
# Pruning on the schedule while fine-tuning from the pre-trained model: the schedule ends at two thirds of
# training and the pruned model recovers in the epochs after it (MRPC, 70 % FFN: median F1 +0.75, accuracy
# +2.2 points over 3 epochs; docs/results/mrpc.md).
MINILM_GRADUAL_EPOCHS = 5
TRAINING_KEYS = tuple(HF_DEFAULTS)


def build_parser(task: str | None = None):
    """train_glue's flags; with `task`, that task's front door (no --task flag)."""
    from tfprune.tasks.glue_tasks import TASKS

    p = cli.ArgumentParser(description=__doc__, formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model and data")
    if task is None:
        g.add_argument("--task", required=True, choices=sorted(TASKS), help="the GLUE task")
    g.add_argument("--model", default="bert-base-uncased", help="Hub name or local Hugging Face folder (default: "
                   "%(default)s; offline and not cached: the packaged all-MiniLM-L6-v2, with a warning)")
    g.add_argument("--data-dir", help="the task's GLUE folder with train.tsv and dev.tsv (default: "
                   "$GLUE_DIR/<TASK>, then data/glue/<TASK>; MRPC also tfds glue/mrpc)")
    g.add_argument("--max-seq-length", type=int, default=128)
    g.add_argument("--max-train-samples", type=int, help="first N training examples only (quick runs)")
    g.add_argument("--max-eval-samples", type=int, help="first N dev examples only (quick runs)")
    g = p.add_argument_group(
        "training", "Defaults: Hugging Face's text-classification example (3 epochs, 2e-5, no warm-up) for "
        "bert-base-uncased and other models; for a model of the packaged all-MiniLM-L6-v2's shape, the values "
        f"measured best for it on MRPC: 3 epochs ({MINILM_GRADUAL_EPOCHS} when pruning on the schedule from the "
        "pre-trained model), 1e-4, warm-up 0.1 (results.json says which applied).")
    g.add_argument("--epochs", type=int, help="with --init-from: the most epochs of retraining (with "
                   "--gradual: all of them)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--learning-rate", type=float, help="AdamW, linear decay to 0")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--warmup-ratio", type=float, help="share of the steps with a linear warm-up")
    g.add_argument("--seed", type=int, default=42)
    g = p.add_argument_group("pruning (Zhu & Gupta schedule)")
    g.add_argument("--final-sparsity", type=cli.sparsity_arg, help="share of each pruned matrix's weights set to "
                   "zero (default: 0.7; 0 trains the dense baseline, without wrappers)")
    g.add_argument("--initial-sparsity", type=cli.sparsity_arg, default=0.0)
    g.add_argument("--begin-step", type=int, default=0)
    g.add_argument("--end-step", type=int, help="default: two thirds of the training steps")
    g.add_argument("--frequency", type=int, default=10, help="mask update every N steps (default: %(default)s)")
    g.add_argument("--exponent", type=float, default=3.0)
    g.add_argument("--pattern", default="unstructured", help="unstructured, row (whole input rows), column (whole "
                   "output columns; also 'unit'), block, nm, or set (each matrix takes the one of --pattern-set whose "
                   "mask keeps the most L2 norm; results.json records the choices)")
    g.add_argument("--pattern-set", default="unit,row,block:4,block:8",
                   help="for --pattern set: candidates, e.g. unit,row,block:4,block:8,nm:2:4 (default: %(default)s)")
    g.add_argument("--block-size", type=int, default=4, help="for --pattern block: 2, 4, 8, ...")
    g.add_argument("--nm", default="2:4", help="for --pattern nm (default: %(default)s)")
    g.add_argument("--prune-scope", default="ffn", help="ffn (default), attention or all")
    g.add_argument("--global-ranking", action="store_true", help="one ranking across all pruned tensors")
    g.add_argument("--schedule-config", help="JSON file with any of the pruning flags above (underscored keys), "
                   "e.g. {\"final_sparsity\": 0.8, \"pattern\": \"block\", \"block_size\": 8}")
    g = p.add_argument_group(
        "structured pruning", "Whole FFN neurons (column j of the up-projection, its bias, row j of the "
        "down-projection) and attention heads (their query, key and value columns and biases, their rows of the "
        "attention output), on the same schedule as above (or one-shot with --init-from, or by ADMM with --admm), "
        "in place of "
        "--final-sparsity; --global-ranking ranks them across layers. With --compact the model without them is "
        "saved as well.")
    g.add_argument("--prune-neurons", type=cli.sparsity_arg, help="fraction of each layer's FFN neurons to remove")
    g.add_argument("--prune-heads", type=cli.sparsity_arg, help="fraction of each layer's attention heads to remove "
                   "(each layer keeps at least one)")
    g.add_argument("--compact", action="store_true", help="also save the compacted model (compact_model/: a plain "
                   "Hugging Face checkpoint when every layer keeps the same width and all heads, else tfprune's "
                   "compact BERT, loaded by tfprune.models.bert.load_classifier), its logits checked against the "
                   "masked model's on the dev set")
    g = p.add_argument_group(
        "token pruning", "After every encoder layer with a rate r > 0, each example keeps ceil((1 - r) x its "
        "tokens), the most attended ones ([CLS] always), in order; later layers run on shorter sequences.")
    g.add_argument("--token-pruning", metavar="RATES", help="one rate in [0, 1) per encoder layer, comma-separated "
                   "(0: no pruner after that layer), e.g. 0,0,0.1,0.2,0.3,0.3 (see tfprune-token-search)")
    g.add_argument("--keep-sep", action="store_true", help="keep the [SEP] tokens as well as [CLS]")
    g = p.add_argument_group(
        "ADMM", "Instead of the gradual schedule: the first --admm-epochs train with the penalty (rho / 2) ||W - Z + "
        "U||^2 toward Z, the projection of W + U onto the --final-sparsity masks of --pattern, or onto whole neurons "
        "and heads with --prune-neurons/--prune-heads (updated --admm-iterations times, rho growing by "
        "--admm-rho-growth up to --admm-rho-max), then a hard prune to the weights' mask and "
        "masked retraining for the remaining epochs. From --init-from too (the reference recipe starts from a "
        "trained model).")
    g.add_argument("--admm", action="store_true", help="prune with ADMM (tfprune.admm) instead of the schedule")
    g.add_argument("--admm-epochs", type=int, help="epochs under the ADMM penalty, the rest masked retraining "
                   "(default: half of --epochs, rounded down, at least 1)")
    g.add_argument("--admm-rho", type=float, default=1e-3, help="initial rho (default: %(default)s)")
    g.add_argument("--admm-rho-growth", type=float, default=1.1, help="rho's factor per update (default: %(default)s)")
    g.add_argument("--admm-rho-max", type=float, default=1.0, help="rho's ceiling (default: %(default)s)")
    g.add_argument("--admm-iterations", type=int, default=30, help="Z/U updates over the ADMM epochs (default: "
                   "%(default)s)")
    g = p.add_argument_group("prune, then retrain")
    g.add_argument("--init-from", help="a fine-tuned model (a run's folder or its model/), loaded instead of "
                   "--model: pruned one-shot to --final-sparsity (or tokens pruned), then retrained with early "
                   "stopping (instead of the gradual schedule)")
    g.add_argument("--patience", type=int, help="with --init-from: stop after N epochs without a better dev "
                   "metric, keeping the best epoch's weights (default: 2)")
    g.add_argument("--gradual", action="store_true", help="with --init-from: prune on the gradual schedule above "
                   "instead of one-shot, training all --epochs and keeping the last (no early stopping: an "
                   "epoch before the target would be a denser model)")
    g = p.add_argument_group("knowledge distillation")
    g.add_argument("--teacher", help="a fine-tuned model of the same task (a run's folder or its model/; any "
                   "size) whose outputs the student learns besides the labels")
    g.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the hard-label loss; the "
                   "teacher's gets 1 - alpha (default: %(default)s)")
    g.add_argument("--temperature", type=float, default=2.0, help="softmax temperature of the soft labels "
                   "(classification; regression matches the teacher's score by MSE) (default: %(default)s)")
    g = p.add_argument_group("outputs")
    g.add_argument("--output-dir", help="default: logs/<task>/<run-name>")
    g.add_argument("--run-name", help="default: <pattern>-<final sparsity> (oneshot- before it with --init-from, "
                   "gradual- with --init-from --gradual, admm- with --admm, -kd after it with --teacher), or dense")
    g.add_argument("--log-every", type=int, default=10, help="TensorBoard scalars every N steps")
    g.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint (same settings)")
    g.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N optimizer steps "
                   "(default: after every epoch only)")
    g.add_argument("--summary", action="store_true", help="print the model's parameter summary and exit")
    g.add_argument("--export-onnx", action="store_true", help="export the stripped model to ONNX at the end "
                   "(parity checked; see python -m tfprune.export)")
    return p


SCHEDULE_KEYS = {"final_sparsity", "initial_sparsity", "begin_step", "end_step", "frequency", "exponent", "pattern",
                 "pattern_set", "block_size", "nm", "prune_scope", "global_ranking", "prune_neurons", "prune_heads",
                 "admm", "admm_epochs", "admm_rho", "admm_rho_growth", "admm_rho_max", "admm_iterations"}


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
RESUME_INDEPENDENT = {"output_dir", "run_name", "resume", "checkpoint_every", "export_onnx", "summary", "compact"}


def run_settings(args) -> dict:
    return {k: v for k, v in sorted(vars(args).items()) if k not in RESUME_INDEPENDENT}


def check_ranges(args) -> None:
    """Every numeric flag within what it means, before anything is loaded (flags left to the model's
    defaults are checked when they are set)."""
    cli.require_positive(args, "epochs", "batch_size", "frequency", "max_train_samples", "max_eval_samples",
                         "patience")
    if args.checkpoint_every < 0:
        raise cli.UsageError(f"--checkpoint-every must be >= 0 (0: after every epoch only), got {args.checkpoint_every}")
    if args.log_every < 0:
        raise cli.UsageError(f"--log-every must be >= 0 (0: only at mask updates), got {args.log_every}")
    if args.max_seq_length < 8:
        raise cli.UsageError(f"--max-seq-length must be >= 8 (room for [CLS], two [SEP] and both sentences), "
                             f"got {args.max_seq_length}")
    if args.warmup_ratio is not None and not 0.0 <= args.warmup_ratio <= 1.0:
        raise cli.UsageError(f"--warmup-ratio must be in [0, 1], got {args.warmup_ratio}")
    if args.learning_rate is not None and not 0.0 < args.learning_rate < float("inf"):
        raise cli.UsageError(f"--learning-rate must be a finite number > 0, got {args.learning_rate}")
    if not 0.0 <= args.weight_decay < float("inf"):
        raise cli.UsageError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.begin_step < 0 or (args.end_step is not None and args.end_step <= args.begin_step):
        raise cli.UsageError(f"--begin-step must be >= 0 and < --end-step, got {args.begin_step} and {args.end_step}")
    cli.check_distillation_knobs(args)
    if args.patience is not None and not args.init_from:
        raise cli.UsageError("--patience applies to prune-then-retrain: give --init-from")
    if structured(args) and args.final_sparsity:
        raise cli.UsageError(f"--final-sparsity {args.final_sparsity:g} prunes single weights; --prune-neurons and "
                             "--prune-heads prune whole neurons and heads instead: give one or the other")
    if args.compact and not structured(args):
        raise cli.UsageError("--compact removes the neurons and heads pruned by --prune-neurons/--prune-heads: "
                             "give one of them")
    if args.token_pruning is not None:
        args.token_pruning = parse_rates(args.token_pruning)
    if args.keep_sep and not args.token_pruning:
        raise cli.UsageError("--keep-sep applies to token pruning: give --token-pruning")
    if args.final_sparsity is None:
        args.final_sparsity = 0.0 if structured(args) or args.token_pruning else 0.7
    if args.gradual:
        check_gradual(args)
    if args.admm:
        check_admm(args)
    if args.init_from and args.final_sparsity == 0 and not structured(args) and not args.token_pruning:
        raise cli.UsageError("--init-from prunes one-shot to --final-sparsity (or --prune-neurons/--prune-heads, or "
                             "tokens with --token-pruning): give a sparsity > 0")


def check_gradual(args) -> None:
    """--gradual: the schedule from a fine-tuned model, to its end (so no early stopping, no ADMM)."""
    if not args.init_from:
        raise cli.UsageError("--gradual prunes a fine-tuned model on the schedule: give --init-from (without it "
                             "pruning is gradual already)")
    if args.patience is not None:
        raise cli.UsageError("--patience stops prune-then-retrain early; --gradual trains all --epochs and keeps "
                             "the last, the first at the target everywhere")
    if args.admm:
        raise cli.UsageError("--admm has its own course (penalty, hard prune, retraining): drop --gradual")
    if not args.final_sparsity and not structured(args):
        raise cli.UsageError("--gradual prunes weights, neurons or heads on the schedule: give --final-sparsity, "
                             "--prune-neurons or --prune-heads")


def check_admm(args) -> None:
    """--admm's knobs and what it combines with (the epochs are checked once the model's defaults are set)."""
    cli.require_positive(args, "admm_epochs", "admm_iterations")
    if not args.final_sparsity and not structured(args):
        raise cli.UsageError("--admm needs a --final-sparsity > 0 (or --prune-neurons/--prune-heads)")
    if args.patience is not None:
        raise cli.UsageError("--patience stops prune-then-retrain early; --admm runs its ADMM epochs, then "
                             "retrains masked to --epochs")
    cli.check_admm_knobs(args)
    if args.epochs is not None:  # else checked once the model's default is set
        admm_epochs(args)


def admm_epochs(args) -> int:
    """Epochs under the ADMM penalty (the rest retrain masked); a UsageError when none would be left."""
    epochs = args.admm_epochs if args.admm_epochs is not None else max(1, args.epochs // 2)
    if epochs >= args.epochs:
        raise cli.UsageError(f"--admm-epochs ({epochs}) must be below --epochs ({args.epochs}): ADMM's epochs, "
                             "then masked retraining")
    return epochs


def parse_rates(text: str) -> list[float]:
    """--token-pruning's list; its length is checked against the model once it is loaded."""
    from tfprune.models.bert.token_pruning import check_rates
    from tfprune.models.bert.token_pruning import parse_rates as parse

    try:
        rates = parse(text)
        return check_rates(rates, len(rates))
    except TfpruneError as error:
        raise cli.UsageError(f"--token-pruning: {error}") from None


def structured(args) -> bool:
    """Whole neurons or heads are pruned (instead of single weights)."""
    return bool(args.prune_neurons or args.prune_heads)


def pattern_from_args(args):
    from tfprune.criteria import Pattern, parse_nm

    n, m = parse_nm(args.nm) if args.pattern == "nm" else (2, 4)
    if args.pattern == "set":
        specs = ["unit" if spec.strip() == "column" else spec.strip() for spec in args.pattern_set.split(",") if spec.strip()]
        return Pattern("set", candidates=tuple(specs))
    name = "unit" if args.pattern == "column" else args.pattern  # a column of a (in, out) kernel is a unit
    return Pattern(name, block_size=args.block_size, n=n, m=m)


def fine_tuned_folder(path: str, flag: str, task) -> str:
    """A run's folder (its model/ inside) or a model folder, whose classifier head fits `task`."""
    from tfprune.models.bert import head_size

    if os.path.isfile(os.path.join(path, "model", "config.json")):
        path = os.path.join(path, "model")
    if not os.path.isdir(path):
        raise cli.UsageError(f"{flag} {path} does not exist")
    outputs = head_size(path)
    if outputs != task.num_labels:
        raise cli.UsageError(f"{flag} {path} has {outputs} outputs; {task.name} needs {task.num_labels} (a model "
                             "fine-tuned on another task?)")
    return path


def main(argv=None, task: str | None = None):
    """train_glue; with `task`, that task's front door (train_mrpc)."""
    from tfprune.tasks.glue_tasks import get_task

    parser = build_parser(task)
    args = parser.parse_args(argv)
    if task is not None:
        args.task = task
    apply_schedule_config(args, parser)
    check_ranges(args)
    pattern = pattern_from_args(args)
    task = get_task(args.task)
    from tfprune.models import bert

    if args.prune_scope not in bert.SCOPES:  # before the data and the model are loaded
        raise cli.UsageError(f"--prune-scope must be one of {list(bert.SCOPES)}, got {args.prune_scope!r}")
    if args.export_onnx and task.sentence2 is None:
        raise cli.UsageError(f"--export-onnx exports sentence-pair models; {task.name} has single sentences")
    if args.init_from:
        args.init_from = fine_tuned_folder(args.init_from, "--init-from", task)
    if args.teacher:
        args.teacher = fine_tuned_folder(args.teacher, "--teacher", task)
    dense_run = args.final_sparsity == 0 and args.initial_sparsity == 0 and not structured(args)
    run_name = args.run_name or default_run_name(args, pattern, dense_run)
    output_dir = args.output_dir or os.path.join("logs", task.name, run_name)
    if args.summary:
        _summary(args)
        return
    with cli.claim_output_dir(output_dir):
        _train(args, task, pattern, dense_run, run_name, output_dir)


def default_run_name(args, pattern, dense_run: bool) -> str:
    name = "dense" if dense_run else f"{pattern.name}-{args.final_sparsity:g}"
    if structured(args):
        name = "-".join(f"{kind}-{fraction:g}" for kind, fraction in (("neurons", args.prune_neurons),
                                                                      ("heads", args.prune_heads)) if fraction)
    if args.token_pruning:
        tokens = "tokens-" + "-".join(f"{rate:g}" for rate in args.token_pruning)
        name = tokens if dense_run else f"{name}-{tokens}"
    if args.admm:
        name = f"admm-{name}"
    elif args.init_from:
        name = f"{'gradual' if args.gradual else 'oneshot'}-{name}"
    return f"{name}-kd" if args.teacher else name


def training_defaults(args, model, gradual: bool = False) -> str:
    """Fill the training flags left unset with the defaults for `model` (`gradual`: the run prunes on the
    schedule while fine-tuning from the pre-trained model); say which applied."""
    from tfprune.models.bert import has_minilm_shape

    minilm = has_minilm_shape(model.config)
    defaults = dict(MINILM_DEFAULTS if minilm else HF_DEFAULTS)
    if minilm and gradual:
        defaults["epochs"] = MINILM_GRADUAL_EPOCHS
    for key in TRAINING_KEYS:
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    if not minilm:
        return "Hugging Face's text-classification example's"
    return "all-MiniLM-L6-v2's (measured on MRPC)" + (
        f", {MINILM_GRADUAL_EPOCHS} epochs when pruning while fine-tuning" if gradual else "")


def _summary(args) -> None:
    from tfprune.models import bert

    model, _, _ = bert.load_classifier(args.model, seed=args.seed)
    print(bert.format_summary(bert.weight_summary(model)))


def _load_teacher(args, task, train_rows):
    """The teacher's logits (or scores) for every training example, in order."""
    from tfprune.models import bert
    from tfprune.tasks.glue import PairBatches
    from tfprune.training import predict_logits

    teacher, teacher_tokenizer, _ = bert.load_classifier(args.teacher, num_labels=task.num_labels, seed=args.seed)
    batches = PairBatches(teacher_tokenizer, train_rows, 64, args.max_seq_length, regression=task.is_regression)
    return predict_logits(teacher, batches)


def _train(args, task, pattern, dense_run: bool, run_name: str, output_dir: str) -> None:
    from tfprune.models import bert
    from tfprune.tasks.glue import PairBatches, as_keras_sequence, load_glue
    from tfprune.training import (
        BestEpoch,
        EvalAndLog,
        RunCheckpoint,
        checkpointable_dropout,
        evaluate,
        format_metrics,
        random_generators,
    )

    data, data_source = load_glue(task, args.data_dir)
    train_rows = data["train"][:args.max_train_samples]
    dev_rows = data["dev"][:args.max_eval_samples]
    teacher_logits = _load_teacher(args, task, train_rows) if args.teacher else None
    checkpointable_dropout()  # before the model's Dropout layers are built
    model, tokenizer, model_used = bert.load_classifier(args.init_from or args.model, num_labels=task.num_labels,
                                                        seed=args.seed)
    defaults_used = training_defaults(args, model, gradual=not (dense_run or args.init_from or args.admm))
    admm_epoch_count = admm_epochs(args) if args.admm else 0
    if args.token_pruning:  # checked against the model's layer count before any training
        try:
            bert.apply_token_pruning(model, args.token_pruning, args.keep_sep, tokenizer.sep_token_id)
        except TfpruneError as error:
            raise cli.UsageError(f"--token-pruning: {error}") from None
    one_shot = bool(args.init_from) and not args.gradual and not args.admm  # prune-then-retrain, early stopping
    if one_shot and args.patience is None:
        args.patience = 2

    import tensorflow as tf
    from transformers import create_optimizer

    from tfprune import plots
    from tfprune._keras import keras
    from tfprune.admm import ADMM
    from tfprune.callbacks import GradualPruningCallback
    from tfprune.distillation import distillation_loss, task_loss, teacher_targets
    from tfprune.report import format_report, sparsity_report, tensor_label, zero_fraction
    from tfprune.schedules import OneShot, PolynomialDecay, to_dict
    from tfprune.strip import strip_model
    from tfprune.structure import group_report
    from tfprune.tasks.metrics import task_metrics

    keras.utils.set_random_seed(args.seed)
    generators = random_generators(model)  # dropout's state, seeded here, saved in the checkpoints
    regression = task.is_regression
    train = PairBatches(tokenizer, train_rows, args.batch_size, args.max_seq_length, shuffle=True, seed=args.seed,
                        regression=regression)
    dev = PairBatches(tokenizer, dev_rows, 64, args.max_seq_length, regression=regression)
    if teacher_logits is not None:
        train.targets = teacher_targets(train.labels, teacher_logits)
    total_steps = len(train) * args.epochs
    end_step = args.end_step if args.end_step is not None else max(args.begin_step + 1, (2 * total_steps) // 3)

    def schedule_to(initial: float, final: float):
        if one_shot:
            return OneShot(final, step=0)
        return PolynomialDecay(initial, final, args.begin_step, end_step, args.frequency, args.exponent)

    schedule = (None if dense_run or structured(args) or args.admm
                else schedule_to(args.initial_sparsity, args.final_sparsity))
    wrappers = [] if dense_run or structured(args) else bert.inject(model, args.prune_scope, pattern)
    # structured: {kind: (fraction, coupled groups)}, each kind on its own schedule
    unit_groups = {kind: (fraction, make(model)) for kind, fraction, make in (
        ("neurons", args.prune_neurons, bert.ffn_neuron_groups), ("heads", args.prune_heads, bert.attention_head_groups))
        if fraction}
    wrappers += [w for _, groups in unit_groups.values() for w in dict.fromkeys(w for g in groups for w in g.wrappers)]

    writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
    admm = None
    if args.admm:
        admm_steps = admm_epoch_count * len(train)
        try:
            admm = ADMM([] if unit_groups else wrappers, args.final_sparsity, rho=args.admm_rho,
                        rho_growth=args.admm_rho_growth, rho_max=args.admm_rho_max,
                        groups=[(fraction, groups) for fraction, groups in unit_groups.values()],
                        # every update before the prune (one at its step would be moot)
                        steps_per_iteration=max(1, admm_steps // (args.admm_iterations + 1)),
                        iterations=args.admm_iterations, global_ranking=args.global_ranking,
                        hard_prune_step=admm_steps, writer=writer)
        except TfpruneError as error:
            raise cli.UsageError(f"--admm: {error}") from None
        admm.attach(model)
    optimizer, _ = create_optimizer(args.learning_rate, total_steps, int(args.warmup_ratio * total_steps),
                                    weight_decay_rate=args.weight_decay)
    loss = (distillation_loss(args.distill_alpha, args.temperature, regression) if args.teacher
            else task_loss(regression))
    model.compile(optimizer=optimizer, loss=loss)

    def metrics(labels, predictions):
        return task_metrics(task.metrics, labels, predictions)

    logger = EvalAndLog(writer, dev, args.log_every, metrics, regression)
    pruning = None
    if schedule:
        pruning = GradualPruningCallback(schedule, global_ranking=args.global_ranking, log_every=args.log_every,
                                         layers=wrappers, writer=writer)
    unit_pruning = {kind: GradualPruningCallback(schedule_to(0.0, fraction), global_ranking=args.global_ranking,
                                                 log_every=args.log_every, groups=groups, writer=writer,
                                                 tag=f"pruning/{kind}")
                    for kind, (fraction, groups) in unit_groups.items() if not admm}
    checkpoints = RunCheckpoint(os.path.join(output_dir, "checkpoints"), run_settings(args), args.checkpoint_every,
                                lambda: {"evaluations": logger.evaluations,
                                         "nonzero_history": pruning.history if pruning else [],
                                         "unit_history": {kind: c.history for kind, c in unit_pruning.items()},
                                         "admm_history": admm.history if admm else []},
                                generators, state={"admm": admm.state} if admm else None)
    best = BestEpoch(logger, task.metrics[0], args.patience, checkpoints.directory) if one_shot else None
    initial_epoch = done_in_epoch = 0
    if args.resume:
        initial_epoch, done_in_epoch, history = checkpoints.restore(model)
        logger.evaluations = history.get("evaluations", [])
        if pruning is not None:
            pruning.history = history.get("nonzero_history", [])
        for kind, callback in unit_pruning.items():
            callback.history = history.get("unit_history", {}).get(kind, [])
        if admm is not None:
            admm.history = history.get("admm_history", [])
    else:
        checkpoints.clear()
    for _ in range(initial_epoch):  # the data order the finished epochs left (Keras starts a fresh Sequence)
        train.on_epoch_end()
    mode = ("retrain" if args.init_from else "dense") if dense_run else (
        f"ADMM for {admm_epoch_count} epoch(s), then masked retraining" if args.admm else
        "one-shot, then retrain" if one_shot else "gradual from a fine-tuned model" if args.init_from else "gradual")
    what = (" and ".join(f"{fraction:.0%} of each layer's {'FFN neurons' if kind == 'neurons' else 'heads'}"
                         for kind, (fraction, _) in unit_groups.items()) if unit_groups
            else f"{len(wrappers)} tensors ({args.prune_scope}, {pattern.name}) to {args.final_sparsity:.0%}")
    span = ("" if one_shot or args.admm else
            f", steps {args.begin_step} to {end_step}" if args.begin_step else f", by step {end_step}")
    print(f"task: {task.name}; model: {model_used}; data: {data_source} ({len(train_rows)} train / {len(dev_rows)} "
          f"dev examples); {total_steps} steps; training defaults: {defaults_used}; " +
          (f"pruning {what} ({mode}{span})" if wrappers else "dense") +
          (f"; distilling from {args.teacher}" if args.teacher else "") +
          (f"; token pruning {','.join(f'{r:g}' for r in args.token_pruning)}" if args.token_pruning else ""))

    clock = cli.Stopwatch()
    with cli.atomic_output_dir(output_dir) as out:
        # the checkpoint sees both logs; early stopping reads the evaluation the logger has just made
        # ADMM first: its hard prune at the end of an epoch comes before that epoch's evaluation and checkpoint
        callbacks = (([admm] if admm else []) + ([pruning] if pruning else []) + list(unit_pruning.values()) +
                     [logger] + ([best] if best else []))
        callbacks.append(checkpoints)
        fit_clock = cli.Stopwatch()
        finished = best is not None and best.done()  # killed after the stopping epoch's checkpoint
        if done_in_epoch and initial_epoch < args.epochs and not finished:  # killed mid-epoch: its remaining batches
            checkpoints.offset = done_in_epoch
            model.fit(as_keras_sequence(train, skip=done_in_epoch), epochs=initial_epoch + 1,
                      initial_epoch=initial_epoch, callbacks=callbacks, verbose=1, shuffle=False)
            initial_epoch += 1
            finished = model.stop_training
        if not finished:
            model.fit(as_keras_sequence(train), epochs=args.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                      verbose=1, shuffle=False)
        train_seconds = fit_clock.seconds
        best_epoch = best.restore(model) if best else None
        final = evaluate(model, dev, metrics, regression)
        pruned = sparsity_report(model, only_pruned=True) if wrappers else None
        strip_model(model)
        compacted = _compact(model, tokenizer, dev, os.path.join(out, "compact_model")) if args.compact else None
        ffn_sparsity = zero_fraction(bert.ffn_kernels(model))
        encoder_sparsity = zero_fraction([w for w in model.weights if "/encoder/" in w.name and len(w.shape) == 2])
        model_dir = os.path.join(out, "model")
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        if pruning is not None and pruning.history:
            plots.nonzero_vs_step(pruning.history, os.path.join(out, "nonzero_vs_step.png"),
                                  f"{task.folder}, {model_used}: % non-zero per pruned tensor")
        results = {
            "task": task.name, "metrics": final, **{f"eval_{name}": value for name, value in final.items()},
            "model": model_used, "init_from": args.init_from, "teacher": args.teacher, "mode": mode,
            "training_defaults": defaults_used, "data": data_source, "run_name": run_name,
            "pattern": pattern.to_dict(), "prune_scope": args.prune_scope if wrappers else None,
            "final_sparsity_asked": args.final_sparsity, "schedule": to_dict(schedule) if schedule else None,
            "measured_ffn_sparsity": ffn_sparsity, "measured_encoder_sparsity": encoder_sparsity,
            "measured_pruned_sparsity": 1 - pruned["total"]["nonzero_pct"] / 100 if pruned else 0.0,
            "evaluations": logger.evaluations, "best_epoch": best_epoch["epoch"] if best_epoch else None,
            "train_seconds": train_seconds,
            "pruning_callback_seconds": sum(c.seconds for c in [pruning, *unit_pruning.values()] if c),
            "steps": int(model.optimizer.iterations.numpy()), "train_examples": len(train_rows),
            "eval_examples": len(dev_rows), "seed": args.seed, "arguments": vars(args),
            "pruned_tensors": pruned["tensors"] if pruned else [],
        }
        if args.token_pruning:
            from tfprune.models.bert.token_pruning import token_report

            results["token_pruning"] = token_report(model, [len(ids) for ids in dev.features["input_ids"]])
        if admm is not None:
            results["admm"] = {"epochs": admm_epoch_count, "hard_prune_step": admm.hard_prune_step,
                               "steps_per_iteration": admm.steps_per_iteration, "updates": admm.done,
                               "rho_start": admm.rho_start, "rho_growth": admm.rho_growth, "rho_max": admm.rho_max,
                               "history": admm.history}
        if pattern.name == "set" and wrappers:
            results["chosen_patterns"] = {tensor_label(w): w.chosen_pattern for w in wrappers}
        if pruning is not None:
            results["nonzero_history"] = pruning.history
        if unit_groups:
            results["structured"] = {kind: {"fraction": fraction, "schedule": to_dict(unit_pruning[kind].schedule)
                                            if kind in unit_pruning else None, "groups": group_report(groups),
                                            "history": unit_pruning[kind].history if kind in unit_pruning else []}
                                     for kind, (fraction, groups) in unit_groups.items()}
        if compacted:
            results["compact_model_dir"] = os.path.join(output_dir, "compact_model")
            results["compact"] = compacted
        if args.export_onnx:
            from tfprune.export.bert_report import export_and_report
            from tfprune.export.bert_report import format_report as format_onnx_report
            from tfprune.tasks.glue import demo_pairs

            results["onnx"] = export_and_report(model_dir, os.path.join(out, "onnx"), dev_rows,
                                                demo_pairs(task, dev_rows), tokenizer, model=model, task=task)
            print(format_onnx_report(results["onnx"]))
        results["wall_seconds"] = clock.seconds
        cli.write_json(os.path.join(out, "results.json"), results)
    writer.close()
    if pruned:
        print("\n" + format_report(pruned))
    if compacted:
        print(f"compacted: {compacted['parameters']:,} parameters of {compacted['parameters_before']:,} "
              f"({compacted['format']} checkpoint); max |logit difference| to the masked model "
              f"{compacted['parity']['max_abs_logit_diff']:.1e} over {compacted['parity']['examples']} dev examples")
    chosen = f" (epoch {best_epoch['epoch']}, the best)" if best_epoch else ""
    if args.token_pruning:
        report = results["token_pruning"]
        print(f"token pruning: mean tokens per layer on the dev set {report['mean_tokens_per_layer']}; encoder FLOPs "
              f"speed-up {report['flops_speedup']:.2f}x")
    print(f"\n{task.name} dev {format_metrics(final)}{chosen}; FFN sparsity {100 * ffn_sparsity:.2f} %; encoder "
          f"sparsity {100 * encoder_sparsity:.2f} %; train {train_seconds:.0f} s; outputs in {output_dir}")


def _compact(model, tokenizer, dev, folder: str) -> dict:
    """The compacted model saved in `folder`, checked against `model` on the dev set (a difference is a bug
    and raises), and what it is: per-layer sizes, parameters, parity, checkpoint format."""
    from tfprune.models.bert import compact

    small, sizes = compact.compact(model)
    parity = compact.check_same_logits(model, small, dev)
    return {"format": compact.save(small, tokenizer, folder), "layer_sizes": sizes, "parity": parity,
            "parameters": small.count_params(), "parameters_before": model.count_params()}


def console() -> int:
    """The `tfprune-train-glue` command."""
    return cli.run(main)
