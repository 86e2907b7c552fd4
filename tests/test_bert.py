import json
import subprocess
import sys

import numpy as np
import pytest

from tfprune import GradualPruningCallback, PolynomialDecay, PrunableLayer, TfpruneError, prunable_layers, strip_model
from tfprune._keras import keras
from tfprune.models import bert


def tiny(tiny_bert_dir):
    model, tokenizer, used = bert.load_classifier(tiny_bert_dir)
    return model, tokenizer


def features(tokenizer, n=6):
    encoded = tokenizer(["the company said profit rose"] * n, ["profit rose , the company said ."] * n,
                        padding=True, return_tensors="np")
    return {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def test_injection_wraps_exactly_the_ffn_kernels_and_keeps_logits(tiny_bert_dir):
    model, tokenizer = tiny(tiny_bert_dir)
    x = features(tokenizer)
    before = model(x).logits.numpy()
    wrappers = bert.inject(model, "ffn")
    assert [w.label for w in wrappers] == ["layer_0/ffn_up", "layer_0/ffn_down", "layer_1/ffn_up", "layer_1/ffn_down"]
    assert prunable_layers(model) == wrappers
    assert [tuple(w.kernel.shape) for w in wrappers] == [(32, 64), (64, 32)] * 2
    layer = bert.encoder_layers(model)[0]
    for dense in (layer.attention.self_attention.query, layer.attention.self_attention.key,
                  layer.attention.self_attention.value, layer.attention.dense_output.dense, model.classifier):
        assert not isinstance(dense, PrunableLayer)
    np.testing.assert_array_equal(model(x).logits.numpy(), before)  # all-ones masks: identical logits


def test_attention_and_all_scopes(tiny_bert_dir):
    model, _ = tiny(tiny_bert_dir)
    assert len(bert.inject(model, "attention")) == 8
    model, _ = tiny(tiny_bert_dir)
    assert len(bert.inject(model, "all")) == 12


def test_training_reaches_target_and_stripped_model_reloads_without_tfprune(tiny_bert_dir, tmp_path):
    from transformers import create_optimizer

    model, tokenizer = tiny(tiny_bert_dir)
    wrappers = bert.inject(model, "ffn")
    x = features(tokenizer, 16)
    y = np.array([0, 1] * 8)
    optimizer, _ = create_optimizer(1e-3, 12, 0)  # HF's AdamWeightDecay: must respect the mask constraint
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[GradualPruningCallback(PolynomialDecay(0.0, 0.7, 0, 6, 2))])
    for w in wrappers:
        assert int((w.kernel.numpy() == 0).sum()) == round(0.7 * w.kernel.shape.num_elements())
    logits = model(x).logits.numpy()
    strip_model(model)
    assert prunable_layers(model) == []
    np.testing.assert_allclose(model(x).logits.numpy(), logits, atol=1e-5)
    model.save_pretrained(tmp_path / "stripped")
    tokenizer.save_pretrained(tmp_path / "stripped")
    np.savez(tmp_path / "inputs.npz", **x)
    script = (
        "import os, sys, json, numpy as np; os.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
        "from transformers import TFBertForSequenceClassification\n"
        f"m = TFBertForSequenceClassification.from_pretrained({str(tmp_path / 'stripped')!r})\n"
        f"x = dict(np.load({str(tmp_path / 'inputs.npz')!r}))\n"
        "assert 'tfprune' not in sys.modules\n"
        "k = m.bert.encoder.layer[0].intermediate.dense.kernel.numpy()\n"
        "print(json.dumps({'logits': m(x).logits.numpy().tolist(), 'zeros': int((k == 0).sum())}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/")
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(reloaded["logits"]), logits, atol=1e-5)
    assert reloaded["zeros"] == round(0.7 * 32 * 64)


def test_weight_summary_counts_from_variables(tiny_bert_dir):
    model, _ = tiny(tiny_bert_dir)
    summary = bert.weight_summary(model)
    assert summary["layers"] == 2
    assert summary["per_layer"]["FFN up"] == 32 * 64 + 64
    assert summary["per_layer"]["FFN down"] == 64 * 32 + 32
    assert summary["per_layer"]["Q"] == 32 * 32 + 32
    assert summary["total"] == sum(int(np.prod(w.shape)) for w in model.weights)
    assert summary["ffn"] == 2 * (32 * 64 + 64 + 64 * 32 + 32)


def test_unknown_model_path_is_a_usage_error(tmp_path):
    with pytest.raises(TfpruneError, match="does not exist"):
        bert.load_classifier(str(tmp_path / "nope" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TfpruneError, match="no config.json"):
        bert.load_classifier(str(tmp_path / "empty"))


def test_prune_selects_hf_layers_by_path(tiny_bert_dir):
    from tfprune import prune

    model, tokenizer = tiny(tiny_bert_dir)
    x = features(tokenizer)
    before = model(x).logits.numpy()
    wrappers = prune(model, "unit", include=r"encoder/layer/\d+/(intermediate|bert_output)/dense$")
    assert [w.label for w in wrappers] == [f"bert/encoder/layer/{i}/{part}/dense" for i in (0, 1)
                                           for part in ("intermediate", "bert_output")]
    assert [w.kernel for w in wrappers] == bert.ffn_kernels(model)
    np.testing.assert_array_equal(model(x).logits.numpy(), before)
    everything = prune(model)  # the rest: Q, K, V, attention outputs, pooler, classifier
    assert len(everything) == 2 * 4 + 2 and len(prunable_layers(model)) == 14
