"""Structured pruning of BERT that pays: whole FFN neurons and attention heads pruned from train_glue, the
compacted model built, saved, reloaded (a plain Hugging Face checkpoint when uniform), exported to ONNX with
a one-head layer, and the interleaved timer's order and ratios. Tiny random BERTs with four heads."""
import json
import os

import numpy as np
import pytest

from tests.helpers import assert_one_line_error, run
from tfprune.cli import run as run_cli
from tfprune.cli import train_glue
from tfprune.export.interleaved import interleave, summarize
from tfprune.models.bert import compact, encoder_layers, load_classifier


@pytest.fixture(scope="module")
def four_head_bert_dir(tmp_path_factory, mrpc_dir):
    from tests.conftest import _tiny_bert

    return _tiny_bert(tmp_path_factory, mrpc_dir, "tiny_bert_4heads", num_attention_heads=4, num_hidden_layers=3)


def _features(rng, batch=4, length=12, vocab=40):
    ids = rng.integers(5, vocab, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[-1, 7:] = 0  # padding in the last row
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _logits(model, features):
    return model(features, training=False).logits.numpy()


def _zero(dense, columns=None, rows=None, bias=True):
    kernel = dense.kernel.numpy()
    if columns is not None:
        kernel[:, columns] = 0
        if bias:
            values = dense.bias.numpy()
            values[columns] = 0
            dense.bias.assign(values)
    if rows is not None:
        kernel[rows] = 0
    dense.kernel.assign(kernel)


def _heads(head_list, size=8):
    return np.concatenate([np.arange(h * size, (h + 1) * size) for h in head_list])


def test_non_uniform_compaction_is_exact_and_reloads(four_head_bert_dir, rng, tmp_path):
    model, tokenizer, _ = load_classifier(four_head_bert_dir)
    layers = encoder_layers(model)
    # layer 0: 10 neurons dead by their up column + bias, 3 heads by their value; layer 1: 20 neurons dead by
    # their down row only, 1 head by its attention-output rows; layer 2: a head with zero query and key only
    # (it still adds the mean of its values: kept), nothing else.
    _zero(layers[0].intermediate.dense, columns=np.arange(10))
    _zero(layers[0].attention.self_attention.value, columns=_heads([0, 1, 3]))
    _zero(layers[1].bert_output.dense, rows=np.arange(30, 50))
    _zero(layers[1].attention.dense_output.dense, rows=_heads([2]))
    _zero(layers[2].attention.self_attention.query, columns=_heads([1]))
    _zero(layers[2].attention.self_attention.key, columns=_heads([1]))
    features = _features(rng)
    small, sizes = compact.compact(model)
    assert sizes == [{"intermediate_size": 54, "num_attention_heads": 1},
                     {"intermediate_size": 44, "num_attention_heads": 3},
                     {"intermediate_size": 64, "num_attention_heads": 4}]
    np.testing.assert_allclose(_logits(small, features), _logits(model, features), atol=1e-6, rtol=0)
    hidden, removed_neurons, removed_heads = 32, 10 + 20, 3 + 1
    assert model.count_params() - small.count_params() == (
        removed_neurons * (2 * hidden + 1) + removed_heads * 8 * (4 * hidden + 3))
    assert compact.save(small, tokenizer, str(tmp_path / "compact")) == "tfprune"
    config = json.loads((tmp_path / "compact" / "config.json").read_text())
    assert config[compact.LAYER_SIZES_KEY] == sizes
    reloaded, _, _ = load_classifier(str(tmp_path / "compact"))
    np.testing.assert_array_equal(_logits(reloaded, features), _logits(small, features))


def test_uniform_compaction_is_a_plain_hugging_face_checkpoint(four_head_bert_dir, rng, tmp_path):
    from transformers import TFBertForSequenceClassification

    model, tokenizer, _ = load_classifier(four_head_bert_dir)
    for layer in encoder_layers(model):
        _zero(layer.intermediate.dense, columns=rng.choice(64, 48, replace=False))
    small, sizes = compact.compact(model)
    assert sizes == [{"intermediate_size": 16, "num_attention_heads": 4}] * 3
    assert compact.save(small, tokenizer, str(tmp_path / "plain")) == "huggingface"
    plain = TFBertForSequenceClassification.from_pretrained(str(tmp_path / "plain"))  # no tfprune involved
    assert plain.config.intermediate_size == 16 and not hasattr(plain.config, compact.LAYER_SIZES_KEY)
    features = _features(rng)
    np.testing.assert_allclose(_logits(plain, features), _logits(model, features), atol=1e-6, rtol=0)


def test_check_same_logits_raises_on_a_model_that_differs(four_head_bert_dir, mrpc_dir):
    from tfprune.tasks.glue import PairBatches, read_mrpc_tsv

    model, tokenizer, _ = load_classifier(four_head_bert_dir)
    small, _ = compact.compact(model)
    batches = PairBatches(tokenizer, read_mrpc_tsv(os.path.join(mrpc_dir, "dev.tsv")), 8)
    assert compact.check_same_logits(model, small, batches)["identical_predictions"] == 1.0
    small.classifier.bias.assign(small.classifier.bias + 1e-3)
    with pytest.raises(compact.CompactionError, match="max .logit difference"):
        compact.check_same_logits(model, small, batches)


def test_a_one_head_layer_exports_to_onnx_with_parity(four_head_bert_dir, rng, tmp_path):
    """tf2onnx's optimizer breaks HF's reshape-and-transpose for one head (ONNX Runtime: 'Attempting to
    broadcast an axis by a dimension other than 1'); compact models write it as expand_dims."""
    from tfprune.export.onnx import checked_parity, export_bert
    from tfprune.export.runtime import ort_feed, session

    model, _, _ = load_classifier(four_head_bert_dir)
    for layer in encoder_layers(model):
        _zero(layer.attention.self_attention.value, columns=_heads([0, 2, 3]))
    small, sizes = compact.compact(model)
    assert [s["num_attention_heads"] for s in sizes] == [1, 1, 1]
    export_bert(small, str(tmp_path / "model.onnx"))
    sess = session(str(tmp_path / "model.onnx"))
    for batch, length in ((1, 9), (4, 12)):  # one pair padded, then four
        features = _features(rng, batch, length)
        got = sess.run(["logits"], ort_feed(sess, features))[0]
        checked_parity(_logits(model, features), got, "one-head export")


def _train(capsys, *args):
    code = run_cli(train_glue.main, [str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return captured


def _structured_run(model_dir, mrpc_dir, out, *extra):
    return ["--task", "mrpc", "--model", model_dir, "--data-dir", mrpc_dir, "--epochs", "2", "--batch-size", "8",
            "--learning-rate", "1e-3", "--frequency", "1", "--output-dir", out, *extra]


def test_train_glue_prunes_neurons_and_heads_and_saves_the_compact_model(four_head_bert_dir, mrpc_dir, tmp_path,
                                                                         capsys):
    from tfprune.tasks.glue import PairBatches, read_mrpc_tsv
    from tfprune.tasks.metrics import accuracy_and_f1
    from tfprune.training import evaluate

    out = tmp_path / "run"
    printed = _train(capsys, *_structured_run(four_head_bert_dir, mrpc_dir, out, "--prune-neurons", "0.75",
                                              "--prune-heads", "0.5", "--compact"))
    assert "compacted:" in printed.out
    results = json.loads((out / "results.json").read_text())
    assert results["run_name"] == "neurons-0.75-heads-0.5" and results["compact"]["format"] == "tfprune"
    assert results["compact"]["layer_sizes"] == [{"intermediate_size": 16, "num_attention_heads": 2}] * 3
    assert results["compact"]["parity"]["max_abs_logit_diff"] <= compact.COMPACT_TOLERANCE
    assert results["compact"]["parity"]["identical_predictions"] == 1.0
    assert [g["kept"] for g in results["structured"]["neurons"]["groups"]] == [16] * 3
    assert [g["alive_in_weights"] for g in results["structured"]["heads"]["groups"]] == [2] * 3
    assert results["compact_model_dir"] == str(out / "compact_model")
    # the masked model: exactly 48 of 64 up-projection columns zero in every layer, and 2 of 4 heads' values
    masked, tokenizer, _ = load_classifier(str(out / "model"))
    for layer in encoder_layers(masked):
        assert (~np.any(layer.intermediate.dense.kernel.numpy() != 0, axis=0)).sum() == 48
        value = layer.attention.self_attention.value.kernel.numpy().reshape(32, 4, 8)
        assert (~np.any(value != 0, axis=(0, 2))).sum() == 2
    small, _, _ = load_classifier(str(out / "compact_model"))
    assert small.count_params() == results["compact"]["parameters"] < results["compact"]["parameters_before"]
    dev = PairBatches(tokenizer, read_mrpc_tsv(os.path.join(mrpc_dir, "dev.tsv")), 64)
    assert evaluate(small, dev, accuracy_and_f1) == results["metrics"]


def test_global_ranking_of_heads_gives_a_non_uniform_compact_model(four_head_bert_dir, mrpc_dir, tmp_path, capsys):
    out = tmp_path / "run"
    _train(capsys, *_structured_run(four_head_bert_dir, mrpc_dir, out, "--prune-heads", "0.5", "--global-ranking",
                                    "--compact", "--init-from", four_head_bert_dir, "--epochs", "1"))
    results = json.loads((out / "results.json").read_text())
    heads = [s["num_attention_heads"] for s in results["compact"]["layer_sizes"]]
    assert sum(heads) == 6 and min(heads) >= 1
    assert all(s["intermediate_size"] == 64 for s in results["compact"]["layer_sizes"])
    assert results["mode"] == "one-shot, then retrain" and results["compact"]["parity"]["identical_predictions"] == 1.0


@pytest.mark.parametrize("extra, message", [
    (["--prune-neurons", "0.5", "--final-sparsity", "0.5"], "--final-sparsity 0.5 prunes single weights"),
    (["--compact"], "--compact removes the neurons and heads"),
    (["--prune-heads", "1.0"], "sparsity must be in [0, 1)"),
])
def test_bad_structured_flags_are_one_line(extra, message, four_head_bert_dir, mrpc_dir, tmp_path):
    out = tmp_path / "run"
    result = run("train_glue.py", *_structured_run(four_head_bert_dir, mrpc_dir, out, *extra))
    assert_one_line_error(result, message)
    assert not out.exists()


def test_interleave_rotates_the_order_and_takes_per_round_ratios():
    calls, now = [], [0.0]
    # ms per call: the warm-up, then three rounds; in round 3 the machine got busy (every time x4)
    costs = {"a": [1, 10, 10, 40], "b": [1, 5, 5, 20], "c": [1, 20, 20, 80]}

    def runner(name):
        def call():
            calls.append(name)
            now[0] += costs[name][calls.count(name) - 1]
        return call

    times = interleave({name: runner(name) for name in costs}, iterations=3, warmup=1, clock=lambda: now[0] / 1e3)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert times["a"] == pytest.approx([10, 10, 40]) and times["b"] == pytest.approx([5, 5, 20])
    summary = summarize(times, "a")
    assert summary["b"]["speedup"] == pytest.approx(2.0) and summary["c"]["speedup"] == pytest.approx(0.5)
    assert summary["a"]["p50_ms"] == pytest.approx(10) and summary["a"]["p90_ms"] == pytest.approx(10)
