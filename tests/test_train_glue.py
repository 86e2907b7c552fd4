"""train_glue on every task shape (pairs, single sentences, regression), distillation, prune-then-retrain
with early stopping, and the training defaults by model. Tiny random BERTs on GLUE-format folders made from
the MRPC fixture's sentences (in each task's own column layout)."""
import json
import os

import numpy as np
import pytest

from tfprune.cli import run, train_glue
from tfprune.tasks.glue import read_mrpc_tsv
from tfprune.tasks.glue_tasks import TASKS, load_task


def _task_row(task, first, second, label, index):
    fields = [str(index)] * task.min_columns
    fields[task.sentence1] = first
    if task.sentence2 is not None:
        fields[task.sentence2] = second
    fields[task.label] = f"{label * 4 + (index % 3) * 0.5:.3f}" if task.is_regression else task.labels[label]
    return "\t".join(fields) + "\n"


@pytest.fixture(scope="module")
def glue_dir(mrpc_dir, tmp_path_factory):
    """$GLUE_DIR-style folder: the MRPC fixture and, for every other task, its rows in that task's layout."""
    root = tmp_path_factory.mktemp("glue")
    os.symlink(mrpc_dir, root / "MRPC")
    for task in TASKS.values():
        if task.name == "mrpc":
            continue
        (root / task.folder).mkdir()
        for split in ("train", "dev"):
            rows = read_mrpc_tsv(os.path.join(mrpc_dir, f"{split}.tsv"))
            lines = [_task_row(task, a, b, label, i) for i, (a, b, label) in enumerate(rows)]
            header = "\t".join(f"column{i}" for i in range(task.min_columns)) + "\n" if task.header else ""
            (root / task.folder / f"{split}.tsv").write_text(header + "".join(lines))
    return root


def _train(capsys, *args):
    code = run(train_glue.main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return captured


def _quick(model, glue_dir, task, out, *extra):
    return ["--task", task, "--model", model, "--data-dir", glue_dir / TASKS[task].folder, "--epochs", "1",
            "--batch-size", "8", "--learning-rate", "1e-3", "--output-dir", out, *extra]


def _saved_metrics(folder, rows, task):
    """The task's metrics of the model a run saved, on `rows`."""
    from transformers import AutoTokenizer, TFBertForSequenceClassification

    from tfprune.tasks.glue import PairBatches
    from tfprune.tasks.metrics import task_metrics
    from tfprune.training import evaluate

    model = TFBertForSequenceClassification.from_pretrained(folder / "model")
    batches = PairBatches(AutoTokenizer.from_pretrained(folder / "model"), rows, 64, regression=task.is_regression)
    return evaluate(model, batches, lambda labels, predictions: task_metrics(task.metrics, labels, predictions),
                    task.is_regression)


@pytest.mark.parametrize("task", ["rte", "sst2", "cola", "stsb"])
def test_each_task_trains_and_reports_its_metrics_of_the_saved_model(task, glue_dir, tiny_bert_dir,
                                                                     tiny_regression_bert_dir, tmp_path, capsys):

    spec = TASKS[task]
    model = tiny_regression_bert_dir if spec.is_regression else tiny_bert_dir
    out = tmp_path / "run"
    export = ["--export-onnx"] if task == "stsb" else []  # a regressor's export is scored with its metrics too
    printed = _train(capsys, *_quick(model, glue_dir, task, out, "--final-sparsity", "0.5", "--frequency", "1", *export))
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == task and list(results["metrics"]) == list(spec.metrics)
    dev = load_task(spec, str(glue_dir / spec.folder))[0]["dev"]
    assert results["metrics"] == pytest.approx(_saved_metrics(out, dev, spec), abs=1e-6)
    if export:
        assert results["onnx"]["task"] == task and results["onnx"]["fusion"]["used"]  # a one-element bias fuses too
        assert results["onnx"]["dev"]["fp32"] == pytest.approx(results["metrics"], abs=1e-3)
    assert results[f"eval_{spec.metrics[0]}"] == results["metrics"][spec.metrics[0]]
    assert results["measured_ffn_sparsity"] == pytest.approx(0.5)
    assert f"{task} dev {spec.metrics[0]}" in printed.out


def test_column_pattern_prunes_whole_output_columns_of_all_six_matrices(glue_dir, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", out, "--pattern", "column", "--prune-scope", "all",
                           "--final-sparsity", "0.5", "--frequency", "1"))
    results = json.loads((out / "results.json").read_text())
    assert len(results["pruned_tensors"]) == 12  # 6 matrices x 2 layers
    from transformers import TFBertForSequenceClassification

    model = TFBertForSequenceClassification.from_pretrained(out / "model")
    kernels = [w.numpy() for w in model.weights if "/encoder/" in w.name and w.name.endswith("kernel:0")]
    assert len(kernels) == 12
    for kernel in kernels:
        dead = np.all(kernel == 0, axis=0)
        assert dead.sum() == kernel.shape[1] // 2 and np.count_nonzero(kernel[:, ~dead] == 0) == 0


def test_pattern_set_records_each_matrix_choice_and_prunes_with_it(glue_dir, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", out, "--pattern", "set", "--pattern-set", "column,row",
                           "--prune-scope", "all", "--final-sparsity", "0.5", "--frequency", "1"))
    results = json.loads((out / "results.json").read_text())
    chosen = results["chosen_patterns"]
    assert len(chosen) == 12 and set(chosen.values()) <= {"unit", "row"}
    from transformers import TFBertForSequenceClassification

    model = TFBertForSequenceClassification.from_pretrained(out / "model")
    kernels = {w.name: w.numpy() for w in model.weights if "/encoder/" in w.name and w.name.endswith("kernel:0")}
    for label, spec in chosen.items():
        kernel = next(k for name, k in kernels.items() if _variable(label) in name)
        axis = 0 if spec == "unit" else 1
        dead = np.all(kernel == 0, axis=axis)
        assert dead.sum() == kernel.shape[1 - axis] // 2, (label, spec)


def test_token_pruning_trains_saves_and_reloads_pruned(glue_dir, tiny_bert_dir, tmp_path, capsys):
    from tfprune.models import bert
    from tfprune.models.bert.token_pruning import kept_tokens, schedule_of
    from tfprune.tasks.glue import PairBatches, load_glue
    from tfprune.tasks.glue_tasks import get_task
    from tfprune.training import evaluate

    out = tmp_path / "run"
    captured = _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", out, "--token-pruning", "0.5,0",
                                      "--max-train-samples", "32", "--max-eval-samples", "24"))
    results = json.loads((out / "results.json").read_text())
    assert results["run_name"] == "tokens-0.5-0" and results["measured_ffn_sparsity"] == 0.0
    report = results["token_pruning"]
    assert report["rates"] == [0.5, 0.0] and report["examples"] == 24
    model, tokenizer, _ = bert.load_classifier(str(out / "model"))
    assert schedule_of(model)["rates"] == [0.5, 0.0]  # the saved model prunes tokens again
    rows = load_glue(get_task("mrpc"), str(glue_dir / "MRPC"))[0]["dev"][:24]
    dev = PairBatches(tokenizer, rows, 64)
    lengths = [len(ids) for ids in dev.features["input_ids"]]
    assert report["mean_tokens_per_layer"][1] == round(np.mean([kept_tokens([0.5, 0], n)[1] for n in lengths]), 1)
    assert evaluate(model, dev) == results["metrics"]
    assert "token pruning: mean tokens per layer" in captured.out


def _variable(label: str) -> str:
    """The kernel variable's path for a pruned tensor's label (layer_0/ffn_up -> /layer_._0/intermediate/dense/kernel:0)."""
    layer, matrix = label.split("/")
    part = {"ffn_up": "intermediate/dense", "ffn_down": "output/dense", "query": "attention/self/query",
            "key": "attention/self/key", "value": "attention/self/value", "attn_out": "attention/output/dense"}[matrix]
    return f"/layer_._{layer.split('_')[1]}/{part}/kernel:0"


def test_distillation_with_alpha_one_is_plain_training(glue_dir, tiny_bert_dir, tmp_path, capsys):
    """The hard-label term alone is the usual cross-entropy: the same run, whatever the teacher says."""
    teacher = tmp_path / "teacher"
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", teacher, "--final-sparsity", "0"))
    plain, distilled = tmp_path / "plain", tmp_path / "distilled"
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", plain))
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", distilled, "--teacher", teacher, "--distill-alpha", "1"))
    a, b = (json.loads((run_dir / "results.json").read_text()) for run_dir in (plain, distilled))
    assert b["teacher"] == str(teacher / "model") and a["teacher"] is None
    assert b["metrics"] == pytest.approx(a["metrics"])
    from transformers import TFBertForSequenceClassification

    weights = [TFBertForSequenceClassification.from_pretrained(d / "model").get_weights() for d in (plain, distilled)]
    for x, y in zip(*weights):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(x == 0, y == 0)


def test_distillation_loss_values():
    import tensorflow as tf

    from tfprune.distillation import distillation_loss, teacher_targets

    logits = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)
    teacher = np.array([[3.0, 0.0], [0.0, 1.0]], np.float32)
    targets = teacher_targets(np.array([0, 1]), teacher)
    ce = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits([0, 1], logits)))
    assert float(distillation_loss(1.0, 2.0)(targets, logits)) == pytest.approx(ce, rel=1e-6)
    t = 2.0
    p = np.exp(teacher / t) / np.exp(teacher / t).sum(1, keepdims=True)
    q = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
    kl = t * t * np.mean(np.sum(p * np.log(p / q), axis=1))
    assert float(distillation_loss(0.0, t)(targets, logits)) == pytest.approx(kl, rel=1e-5)
    assert float(distillation_loss(0.0, t)(teacher_targets(np.array([0, 1]), logits), logits)) == pytest.approx(0, abs=1e-6)
    scores = np.array([[1.0], [3.0]], np.float32)
    regression = distillation_loss(0.25, regression=True)(teacher_targets(np.array([2.0, 2.0]), np.array([0.0, 3.0])),
                                                          scores)
    assert float(regression) == pytest.approx(0.25 * 1.0 + 0.75 * 0.5)


def test_prune_then_retrain_stops_early_and_keeps_the_best_epoch(glue_dir, tiny_bert_dir, tmp_path, capsys):
    dense = tmp_path / "dense"
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", dense, "--final-sparsity", "0"))
    out = tmp_path / "retrained"
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", out, "--init-from", dense, "--final-sparsity", "0.6",
                           "--epochs", "6", "--patience", "1", "--learning-rate", "3e-2"))
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "one-shot, then retrain" and results["schedule"]["kind"] == "one_shot"
    assert results["measured_ffn_sparsity"] == pytest.approx(0.6, abs=1 / 64)
    f1 = [row["f1"] for row in results["evaluations"]]
    best = int(np.argmax(f1))  # the first of the best
    assert results["best_epoch"] == best + 1
    assert len(f1) == 6 or len(f1) == best + 2  # all epochs, or stopped one epoch after the best
    assert results["metrics"] == pytest.approx({k: results["evaluations"][best][k] for k in ("f1", "accuracy")})
    mrpc = TASKS["mrpc"]
    dev = load_task(mrpc, str(glue_dir / "MRPC"))[0]["dev"]
    assert _saved_metrics(out, dev, mrpc) == pytest.approx(results["metrics"])


def test_gradual_from_a_fine_tuned_model_follows_the_schedule_and_keeps_the_last_epoch(glue_dir, tiny_bert_dir,
                                                                                        tmp_path, capsys):
    """--init-from --gradual: the fine-tuned weights pruned on Zhu & Gupta's schedule (0 -> 0.6 over steps 0-8 of
    12, a mask update every 2 steps), all three epochs trained, the last one's model saved."""
    dense = tmp_path / "dense"
    _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", dense, "--final-sparsity", "0", "--max-train-samples",
                           "32"))
    out = tmp_path / "gradual"
    captured = _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", out, "--init-from", dense, "--gradual",
                                      "--final-sparsity", "0.6", "--epochs", "3", "--frequency", "2",
                                      "--max-train-samples", "32", "--log-every", "2"))
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "gradual from a fine-tuned model" and "by step 8" in captured.out
    assert results["run_name"] == "gradual-unstructured-0.6"
    assert results["schedule"] == {"kind": "polynomial_decay", "initial_sparsity": 0.0, "final_sparsity": 0.6,
                                   "begin_step": 0, "end_step": 8, "frequency": 2, "exponent": 3.0}
    assert results["steps"] == 12 and len(results["evaluations"]) == 3 and results["best_epoch"] is None
    history = {row["step"]: row["target_sparsity"] for row in results["nonzero_history"]}
    assert history[0] == 0.0 and history[4] == pytest.approx(0.6 * (1 - 0.5 ** 3)) and history[8] == 0.6
    assert results["measured_ffn_sparsity"] == pytest.approx(0.6, abs=1 / 64)
    assert results["metrics"] == pytest.approx({k: results["evaluations"][-1][k] for k in ("f1", "accuracy")})
    mrpc = TASKS["mrpc"]
    dev = load_task(mrpc, str(glue_dir / "MRPC"))[0]["dev"]
    assert _saved_metrics(out, dev, mrpc) == pytest.approx(results["metrics"])


def test_a_begin_step_holds_the_masks_open_until_it_and_the_summary_says_so(glue_dir, tiny_bert_dir, tmp_path,
                                                                            capsys):
    """--begin-step 4 --end-step 10 over 12 steps: no pruning before step 4, Zhu & Gupta's cubic from there (a
    mask update every 2 steps), the target reached at step 10; the run's summary line names both steps."""
    out = tmp_path / "late"
    captured = _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", out, "--final-sparsity", "0.6",
                                      "--begin-step", "4", "--end-step", "10", "--frequency", "2", "--epochs", "3",
                                      "--max-train-samples", "32", "--log-every", "2"))
    assert "(gradual, steps 4 to 10)" in captured.out
    results = json.loads((out / "results.json").read_text())
    assert results["schedule"]["begin_step"] == 4 and results["schedule"]["end_step"] == 10
    history = {row["step"]: row for row in results["nonzero_history"]}
    assert history[2]["target_sparsity"] == 0.0 and history[2]["nonzero_pct_all"] == 100.0
    assert history[6]["target_sparsity"] == pytest.approx(0.6 * (1 - (2 / 3) ** 3))
    assert history[8]["target_sparsity"] == pytest.approx(0.6 * (1 - (1 / 3) ** 3))
    assert history[10]["target_sparsity"] == 0.6
    assert results["measured_ffn_sparsity"] == pytest.approx(0.6, abs=1 / 64)


def test_admm_trains_toward_z_then_hard_prunes_and_keeps_the_zeros(glue_dir, tiny_bert_dir, tmp_path, capsys):
    """Two epochs under the penalty (3 Z/U updates, rho doubling), the hard prune after their last step, one epoch
    of masked retraining: every FFN kernel ends with exactly half its weights zero, the mask of the prune."""
    out = tmp_path / "run"
    captured = _train(capsys, *_quick(tiny_bert_dir, glue_dir, "mrpc", out, "--admm", "--final-sparsity", "0.5",
                                      "--epochs", "3", "--admm-epochs", "2", "--admm-iterations", "3",
                                      "--admm-rho", "1e-2", "--admm-rho-growth", "2", "--max-train-samples", "32"))
    results = json.loads((out / "results.json").read_text())
    assert results["run_name"] == "admm-unstructured-0.5" and results["schedule"] is None
    assert results["mode"] == "ADMM for 2 epoch(s), then masked retraining" and "ADMM for 2" in captured.out
    admm = results["admm"]
    assert admm["hard_prune_step"] == 8 and admm["steps_per_iteration"] == 2 and admm["updates"] == 3
    assert [h["step"] for h in admm["history"]] == [0, 2, 4, 6]
    assert [h["rho"] for h in admm["history"]] == pytest.approx([1e-2, 1e-2, 2e-2, 4e-2])
    assert results["steps"] == 12 and len(results["evaluations"]) == 3
    assert results["evaluations"][2] != results["evaluations"][1]  # the retraining epoch changed the model
    from transformers import TFBertForSequenceClassification

    model = TFBertForSequenceClassification.from_pretrained(out / "model")
    ffn = [w.numpy() for w in model.weights if "/encoder/" in w.name and w.name.endswith("kernel:0")
           and ("/intermediate/" in w.name or "/output/dense/" in w.name and "/attention/" not in w.name)]
    assert len(ffn) == 4 and [int(np.count_nonzero(k == 0)) for k in ffn] == [1024] * 4


@pytest.mark.parametrize("extra, message", [
    (["--admm", "--final-sparsity", "0"], "--admm needs a --final-sparsity > 0 (or --prune-neurons/--prune-heads)"),
    (["--admm", "--admm-rho", "0"], "--admm-rho must be a finite number > 0"),
    (["--admm", "--admm-rho-growth", "0.5"], "--admm-rho-growth must be a finite number >= 1"),
    (["--admm", "--admm-rho", "2"], "--admm-rho (2) must not exceed --admm-rho-max (1)"),
    (["--admm", "--admm-iterations", "0"], "--admm-iterations must be >= 1"),
    (["--admm", "--admm-epochs", "1"], "--admm-epochs (1) must be below --epochs (1)"),
    (["--admm", "--init-from", "{dense}", "--patience", "1"], "--admm runs its ADMM epochs"),
    (["--patience", "2"], "--patience applies to prune-then-retrain"),
    (["--init-from", "{dense}", "--final-sparsity", "0"], "give a sparsity > 0"),
    (["--init-from", "{missing}"], "does not exist"),
    (["--gradual"], "--gradual prunes a fine-tuned model on the schedule: give --init-from"),
    (["--init-from", "{dense}", "--gradual", "--patience", "1"], "--gradual trains all --epochs"),
    (["--init-from", "{dense}", "--gradual", "--admm"], "drop --gradual"),
    (["--init-from", "{dense}", "--gradual", "--token-pruning", "0,0.5"], "--gradual prunes weights, neurons or heads"),
    (["--teacher", "{regression}"], "has 1 outputs; mrpc needs 2"),
    (["--distill-alpha", "1.5"], "--distill-alpha must be in [0, 1]"),
    (["--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--export-onnx", "--task", "sst2"], "--export-onnx exports sentence-pair models; sst2 has single sentences"),
])
def test_bad_glue_flags_are_one_line_before_training(extra, message, glue_dir, tiny_bert_dir, tiny_regression_bert_dir,
                                                     tmp_path, capsys):
    places = {"dense": tiny_bert_dir, "missing": str(tmp_path / "nowhere"), "regression": tiny_regression_bert_dir}
    out = tmp_path / "run"
    args = _quick(tiny_bert_dir, glue_dir, "mrpc", out) + [e.format(**places) for e in extra]
    assert run(train_glue.main, [str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not out.exists()


def test_training_defaults_follow_the_model(tiny_bert_dir):
    from types import SimpleNamespace

    from transformers import BertConfig

    from tfprune.models.bert import has_minilm_shape, packaged_minilm_dir

    minilm = BertConfig(num_hidden_layers=6, hidden_size=384, intermediate_size=1536, num_attention_heads=12)
    assert has_minilm_shape(minilm) and not has_minilm_shape(BertConfig())
    if packaged_minilm_dir():
        assert has_minilm_shape(BertConfig.from_pretrained(packaged_minilm_dir()))
    for config, expected in ((minilm, train_glue.MINILM_DEFAULTS), (BertConfig(), train_glue.HF_DEFAULTS)):
        args = SimpleNamespace(epochs=None, learning_rate=None, warmup_ratio=0.05)
        train_glue.training_defaults(args, SimpleNamespace(config=config))
        assert (args.epochs, args.learning_rate, args.warmup_ratio) == (expected["epochs"], expected["learning_rate"], 0.05)
    assert train_glue.HF_DEFAULTS == {"epochs": 3, "learning_rate": 2e-5, "warmup_ratio": 0.0}
    # Pruning on the schedule from the pre-trained model: MiniLM trains 5 epochs, unless told; others keep 3.
    for config, epochs, expected in ((minilm, None, 5), (minilm, 4, 4), (BertConfig(), None, 3)):
        args = SimpleNamespace(epochs=epochs, learning_rate=None, warmup_ratio=None)
        said = train_glue.training_defaults(args, SimpleNamespace(config=config), gradual=True)
        assert args.epochs == expected and args.warmup_ratio == (0.1 if config is minilm else 0.0)
        assert ("5 epochs when pruning" in said) == (config is minilm)


def test_gradual_runs_of_a_minilm_shaped_model_train_5_epochs(mrpc_dir, tiny_bert_dir, tmp_path, monkeypatch, capsys):
    """The epochs default follows the mode: pruning from the pre-trained model 5, dense 3 (MiniLM's defaults)."""
    from tfprune.models import bert

    monkeypatch.setattr(bert, "has_minilm_shape", lambda config: True)
    for sparsity, epochs in (("0.5", 5), ("0", 3)):
        out = tmp_path / f"run-{sparsity}"
        args = ["--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--max-train-samples", "8", "--max-eval-samples",
                "8", "--batch-size", "8", "--final-sparsity", sparsity, "--output-dir", out]
        assert run(train_glue.main, ["--task", "mrpc"] + [str(a) for a in args]) == 0, capsys.readouterr().err[-2000:]
        results = json.loads((out / "results.json").read_text())
        assert [e["epoch"] for e in results["evaluations"]] == list(range(1, epochs + 1))
        assert results["arguments"]["epochs"] == epochs and results["arguments"]["learning_rate"] == 1e-4
        assert ("5 epochs when pruning" in results["training_defaults"]) == (epochs == 5)


def test_train_mrpc_is_train_glue_for_mrpc(mrpc_dir, tiny_bert_dir, tmp_path, capsys):
    from tfprune.cli import train_mrpc

    out = tmp_path / "run"
    args = ["--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--epochs", "1", "--batch-size", "8", "--output-dir", out]
    assert run(train_mrpc.main, [str(a) for a in args]) == 0, capsys.readouterr().err[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "mrpc" and set(results["metrics"]) == {"f1", "accuracy"}
    assert "task" not in {action.dest for action in train_mrpc.build_parser()._actions}
    with pytest.raises(SystemExit) as exited:
        train_mrpc.main(["--task", "rte"])
    assert exited.value.code == 2 and "unrecognized arguments: --task rte" in capsys.readouterr().err
