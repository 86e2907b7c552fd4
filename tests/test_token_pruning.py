"""Token (sequence) pruning of TF BERT: which tokens go, how many, in which order, against a reference
computed layer by layer; padding; saving, reloading and ONNX; the schedule search."""
import contextlib
import math

import numpy as np
import pytest
import tensorflow as tf

from tfprune import TfpruneError
from tfprune._keras import keras
from tfprune.models import bert
from tfprune.models.bert import token_pruning as tp
from tfprune.models.bert.token_search import greedy_schedule


@pytest.fixture(scope="module")
def three_layers():
    from transformers import BertConfig, TFBertForSequenceClassification

    keras.utils.set_random_seed(1)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = TFBertForSequenceClassification(config)
    model(model.dummy_inputs)
    return model


@contextlib.contextmanager
def token_pruned(model, rates, **options):
    """The module's shared model pruning tokens with `rates` inside the block, plain again after it."""
    tp.apply(model, rates, **options)
    try:
        yield
    finally:
        tp.apply(model, [0.0] * len(rates))


def batch(lengths, width=20, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 60, (len(lengths), width)).astype(np.int32)
    mask = (np.arange(width)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    ids[:, 0] = 2
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def reference_logits(model, features, rates, forced=()):
    """One example at a time, no padding: the plain layers, the significance and the kept tokens in numpy
    (`forced` positions kept like [CLS])."""
    main = model.bert
    out = []
    for ids in _rows(features):
        hidden = main.embeddings(input_ids=ids[None], token_type_ids=np.zeros_like(ids)[None])
        positions = np.arange(ids.size)
        for layer, rate in zip(main.encoder.layer, rates):
            mask = tf.zeros((1, 1, 1, positions.size))
            hidden, probs = layer(hidden, mask, None, None, None, None, output_attentions=True)[:2]
            if rate > 0:
                p = probs.numpy()[0].mean(0)  # (queries, keys)
                scores = p.sum(0) - np.diag(p)
                scores[0] = np.inf
                scores[np.isin(positions, forced)] = np.inf
                kept = np.sort(np.argsort(-scores, kind="stable")[:tp.kept_count(rate, positions.size)])
                hidden, positions = tf.gather(hidden, kept, axis=1), positions[kept]
        out.append(model.classifier(main.pooler(hidden)).numpy()[0])
    return np.array(out)


def _rows(features):
    return [ids[:int(m.sum())] for ids, m in zip(features["input_ids"], features["attention_mask"])]


def test_pruned_logits_equal_a_layer_by_layer_reference(three_layers):
    x = batch([20, 13, 6, 9])
    with token_pruned(three_layers, [0.5, 0.25, 0.0]):
        got = three_layers(x).logits.numpy()
        np.testing.assert_allclose(got, reference_logits(three_layers, x, [0.5, 0.25, 0.0]), atol=2e-6)


def test_sequence_shortens_to_the_largest_kept_count(three_layers):
    x = batch([20, 13, 6, 9])
    with token_pruned(three_layers, [0.5, 0.3, 0.0]):
        hidden = three_layers(x, output_hidden_states=True).hidden_states
        # 20 real tokens at most: ceil(0.5 * 20) = 10, then ceil(0.7 * 10) = 7, unchanged by the last layer
        assert [int(h.shape[1]) for h in hidden] == [20, 10, 7, 7]
        assert tp.kept_tokens([0.5, 0.3, 0.0], 13) == [13, 7, 5]


def test_padding_is_dropped_first_and_changes_nothing(three_layers):
    x = batch([20, 13, 6, 9])
    with token_pruned(three_layers, [0.2, 0.2, 0.0]):
        padded = three_layers(x).logits.numpy()
        for row, length in enumerate([20, 13, 6, 9]):
            alone = {k: v[row:row + 1, :length] for k, v in x.items()}
            np.testing.assert_allclose(three_layers(alone).logits.numpy()[0], padded[row], atol=1e-6)


def test_zero_rates_give_back_the_plain_encoder_and_its_exact_logits(three_layers):
    x = batch([20, 7])
    before = three_layers(x).logits.numpy()
    tp.apply(three_layers, [0.5, 0.5, 0.5])
    assert type(three_layers.bert.encoder).__name__ == "TokenPruningEncoder"
    assert not np.allclose(three_layers(x).logits.numpy(), before)
    tp.apply(three_layers, [0, 0, 0])
    assert type(three_layers.bert.encoder).__name__ == "TFBertEncoder"
    assert tp.schedule_of(three_layers) is None
    np.testing.assert_array_equal(three_layers(x).logits.numpy(), before)


def test_select_keeps_cls_protected_and_best_tokens_in_order():
    hidden = tf.constant(np.arange(2 * 6, dtype=np.float32).reshape(2, 6, 1))
    mask = tf.constant([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], tf.float32)
    scores = tf.constant([[0.0, 5, 1, 3, 2, 9], [0.0, 1, 2, 7, 7, 7]])
    protected = tf.constant([[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], tf.float32)
    # rate 0.5: ceil(2.5) = 3 of 5 and ceil(1.5) = 2 of 3; width 3, the second example's third slot padding
    kept, new_mask, order = tp.select(hidden, mask, scores, 0.5, protected)
    assert order.numpy().tolist() == [[0, 1, 2], [0, 2, 1]]  # [CLS], [SEP]-like 2, best 1; [CLS], 2, then padding
    assert new_mask.numpy().tolist() == [[1, 1, 1], [1, 1, 0]]
    assert kept.numpy()[..., 0].tolist() == [[0, 1, 2], [6, 8, 7]]
    _, _, order = tp.select(hidden, mask, scores, 0.5)
    assert order.numpy()[0].tolist() == [0, 1, 3]  # without protection the third best (3) comes in


def test_keep_sep_keeps_every_sep(three_layers):
    x = batch([20, 12])
    x["input_ids"][0, [7, 19]] = x["input_ids"][1, [5, 11]] = 3
    assert [tp.kept_count(0.85, 20), tp.kept_count(0.85, 12)] == [3, 2]  # 0.15 x 20 is 3.0000000000000004
    with token_pruned(three_layers, [0.85, 0.0, 0.0], keep_sep=True, sep_token_id=3):  # 3 of 20 and 2 of 12 kept
        got = three_layers(x).logits.numpy()
        # the second example keeps [CLS] and one of its two [SEP]: [CLS] outranks them
        hidden = three_layers(x, output_hidden_states=True).hidden_states[1]
        np.testing.assert_array_equal(hidden.numpy()[1, 0], three_layers.bert.encoder.layer[0](
            three_layers.bert.embeddings(input_ids=x["input_ids"][1:, :12], token_type_ids=x["token_type_ids"][1:, :12]),
            tf.zeros((1, 1, 1, 12)), None, None, None, None, False)[0].numpy()[0, 0])
        np.testing.assert_allclose(got[0], reference_logits(three_layers, x, [0.85, 0, 0], forced=[7, 19])[0],
                                   atol=2e-6)  # [CLS] and both [SEP]: nothing else fits
        tp.apply(three_layers, [0.85, 0.0, 0.0])
        np.testing.assert_allclose(three_layers(x).logits.numpy(), reference_logits(three_layers, x, [0.85, 0, 0]),
                                   atol=2e-6)
        assert not np.allclose(three_layers(x).logits.numpy()[0], got[0])



@pytest.mark.parametrize("rates, fragments", [([0.1, 0.2], ["2 rates", "3 layers"]),
                                              ([0.1, 1.0, 0.0], ["rate 1 for layer 1", "[0, 1)"]),
                                              ([-0.1, 0.0, 0.0], ["rate -0.1 for layer 0", "[0, 1)"]),
                                              ([float("nan"), 0.0, 0.0], ["nan", "[0, 1)"])])
def test_bad_schedules_are_refused_naming_both(three_layers, rates, fragments):
    with pytest.raises(TfpruneError) as error:
        tp.apply(three_layers, rates)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert type(three_layers.bert.encoder).__name__ == "TFBertEncoder"


def test_saved_model_reloads_token_pruned_and_exports_to_onnx_fused(tiny_bert_dir, tmp_path, monkeypatch):
    from onnxruntime.transformers.onnx_model_bert_tf import BertOnnxModelTF

    from tfprune.export.fusion import optimize_bert
    from tfprune.export.onnx import INPUT_NAMES, export_bert
    from tfprune.export.runtime import session

    model, tokenizer, _ = bert.load_classifier(tiny_bert_dir)
    bert.apply_token_pruning(model, [0.4, 0.0], keep_sep=True, sep_token_id=tokenizer.sep_token_id)
    x = dict(tokenizer(["the company said profit rose sharply", "profit"], ["it rose .", "the company said ."],
                       padding="max_length", max_length=24, return_tensors="np"))
    x = {k: x[k].astype(np.int32) for k in INPUT_NAMES}
    logits = model(x).logits.numpy()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    again, _, _ = bert.load_classifier(str(tmp_path / "m"))
    assert tp.schedule_of(again) == {"rates": [0.4, 0.0], "keep_sep": True, "sep_token_id": tokenizer.sep_token_id}
    np.testing.assert_array_equal(again(x).logits.numpy(), logits)
    export_bert(again, str(tmp_path / "m.onnx"))
    got = session(str(tmp_path / "m.onnx")).run(["logits"], x)[0]
    np.testing.assert_allclose(got, logits, atol=1e-5)
    longer = {k: np.concatenate([v, v], 0)[:, :20] for k, v in x.items()}  # another batch and length
    np.testing.assert_allclose(session(str(tmp_path / "m.onnx")).run(["logits"], longer)[0],
                               again(longer).logits.numpy(), atol=1e-5)
    # ORT's fusions hold parity on the token-pruned graph; where its attention fusion fails (on MiniLM's it
    # leaves a cycle: "Graph is not a DAG"), the other fusions are kept without it
    real_optimize, real_sort = BertOnnxModelTF.optimize, BertOnnxModelTF.topological_sort

    def optimize(self, options=None, *args, **kwargs):
        self.attention_fused = options.enable_attention
        return real_optimize(self, options, *args, **kwargs)

    def topological_sort(self, *args, **kwargs):  # ORT finds the cycle when it sorts the optimized graph
        if fail_attention and getattr(self, "attention_fused", False):
            raise RuntimeError("Graph is not a DAG")
        return real_sort(self, *args, **kwargs)

    monkeypatch.setattr(BertOnnxModelTF, "optimize", optimize)
    monkeypatch.setattr(BertOnnxModelTF, "topological_sort", topological_sort)
    for fail_attention in (False, True):
        fusion = optimize_bert(str(tmp_path / "m.onnx"), str(tmp_path / "fused.onnx"),
                               again.config.num_attention_heads, again.config.hidden_size)
        assert fusion["rewrites"].get("attention_unfused", False) is fail_attention
        assert fusion["rewrites"]["skip_layer_norm_split"] > 0
        for batch in (x, longer):
            np.testing.assert_allclose(session(str(tmp_path / "fused.onnx")).run(["logits"], batch)[0],
                                       again(batch).logits.numpy(), atol=1e-5)


def test_training_with_token_pruning_updates_every_layer(three_layers):
    from transformers import TFBertForSequenceClassification

    model = TFBertForSequenceClassification(three_layers.config)
    model(model.dummy_inputs)
    tp.apply(model, [0.5, 0.5, 0.0])
    x = batch([20, 13, 6, 9, 17, 3, 11, 20])
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.array([0, 1] * 4), batch_size=4, epochs=1, verbose=0)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    # every layer's weights learn through the gathered tokens (the pooler and classifier too)
    assert all(changed[i] for i, w in enumerate(model.trainable_weights) if "/encoder/" in w.name)


def test_flops_speedup_counts_each_layer(three_layers):
    layer = bert.encoder_layers(three_layers)[0]
    assert tp.layer_flops(layer, 10) == 2 * 10 * (4 * 32 * 32 + 2 * 32 * 64) + 4 * 100 * 32
    lengths = [20, 8]
    dense = sum(3 * tp.layer_flops(layer, n) for n in lengths)
    pruned = sum(tp.layer_flops(layer, n) + 2 * tp.layer_flops(layer, math.ceil(0.5 * n)) for n in lengths)
    assert tp.flops_speedup(three_layers, [0.5, 0.0, 0.0], lengths) == pytest.approx(dense / pruned)


def test_greedy_search_takes_the_cheapest_moves_until_the_target():
    # metric: layer 0 hurts a lot, layer 1 a little, layer 2 not at all; speed: layer 0's rate counts double
    def evaluate(rates):
        return 1.0 - 0.5 * rates[0] - 0.1 * rates[1] - 0.0 * rates[2]

    def speedup(rates):
        return 1.0 + 2 * rates[0] + rates[1] + 0.5 * rates[2]

    steps = []
    found = greedy_schedule(evaluate, speedup, 4, 1.9, step=0.25, max_rate=0.5, log=steps.append)
    # the free layer to its ceiling first, then the cheap one, then the costly one; the last layer never
    assert [s["rates"] for s in steps] == [[0, 0, 0, 0], [0, 0, 0.25, 0], [0, 0, 0.5, 0], [0, 0.25, 0.5, 0],
                                          [0, 0.5, 0.5, 0], [0.25, 0.5, 0.5, 0]]
    assert found["rates"] == [0.25, 0.5, 0.5, 0] and found["speedup"] == pytest.approx(2.25)
    assert found["metric"] == pytest.approx(1 - 0.125 - 0.05)
    with pytest.raises(TfpruneError, match="out of reach"):
        greedy_schedule(evaluate, speedup, 4, 5.0, step=0.25, max_rate=0.5)


def test_lstm_selector_keeps_the_best_scored_tokens_and_learns_its_scores():
    from tfprune.models.lstm import LSTMClassifier

    keras.utils.set_random_seed(0)
    x = batch([20, 13, 6, 9])
    plain, pruned = LSTMClassifier(60, 2, 0.0, 8, 8), LSTMClassifier(60, 2, 0.5, 8, 8)
    plain(x), pruned(x)
    assert plain.selector is None and len(pruned.trainable_weights) == len(plain.trainable_weights) + 2
    # the selection, recomputed: scores of the embedded tokens, the best ceil(n / 2) in order, gated
    embedded = pruned.embedding(x["input_ids"]).numpy()
    scores = pruned.selector.score(embedded).numpy()[..., 0]
    gate = 1 / (1 + np.exp(-scores))
    expected = []
    for row, n in enumerate([20, 13, 6, 9]):
        kept = np.sort(np.argsort(-scores[row, :n], kind="stable")[:math.ceil(n / 2)])
        alone = (embedded[row, kept] * gate[row, kept, None])[None]
        expected.append(pruned.head(pruned.lstm(alone)).numpy()[0])
    np.testing.assert_allclose(pruned(x).numpy(), np.array(expected), atol=1e-5)
    score_kernel = pruned.selector.score.kernel.numpy().copy()
    pruned.compile(optimizer=keras.optimizers.Adam(1e-2),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, np.array([0, 1, 0, 1]), epochs=2, verbose=0)
    assert not np.array_equal(pruned.selector.score.kernel.numpy(), score_kernel)  # significance is learned


def test_token_lstm_command_trains_times_and_reports(mrpc_dir, tiny_bert_dir, tmp_path):
    import json

    from tests.helpers import run

    out = tmp_path / "lstm"
    result = run("token_lstm.py", "--task", "mrpc", "--data-dir", mrpc_dir, "--tokenizer", tiny_bert_dir,
                 "--rates", "0.5", "--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "32",
                 "--embedding-dim", "8", "--units", "8", "--timing-rounds", "2", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [row["rate"] for row in results["rows"]] == [0.0, 0.5]
    assert results["rows"][0]["speedup"] == {"dev": 1.0, "dev_padded_128": 1.0}
    assert set(results["rows"][1]["metrics"]) == {"f1", "accuracy"}
    assert "| 0.5 |" in (out / "results.md").read_text()
