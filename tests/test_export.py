import json

import numpy as np
import onnx
import pytest
import tensorflow as tf

from tests.helpers import assert_one_line_error, run
from tfprune import export, prunable_layers, strip_model
from tfprune.errors import TfpruneError
from tfprune.export.bert_report import export_and_report
from tfprune.export.onnx import CUSTOM_HANDLERS
from tfprune.models import bert
from tfprune.models.mlp import build_mlp
from tfprune.tasks.glue import MRPC_DEMO_PAIRS


@pytest.fixture(scope="module")
def pruned_tiny_dir(tiny_bert_dir, tmp_path_factory):
    """The tiny BERT with 60 %-pruned FFN kernels, stripped and saved in HF layout."""
    model, tokenizer, _ = bert.load_classifier(tiny_bert_dir)
    rng = np.random.default_rng(3)
    for weight in model.weights:  # biases and LayerNorm shifts as a trained model has them, not zeros
        if len(weight.shape) == 1:
            weight.assign(weight + rng.normal(0, 0.1, weight.shape).astype(np.float32))
    for wrapper in bert.inject(model, "ffn"):
        wrapper.prune_to(0.6)
    strip_model(model)
    folder = tmp_path_factory.mktemp("pruned_tiny") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.slow
def test_bert_export_parity_zeros_dynamic_shapes_and_int8(pruned_tiny_dir, mrpc_dir, tmp_path):
    from tfprune.tasks.glue import load_mrpc

    dev = load_mrpc(mrpc_dir)[0]["dev"]
    report = export_and_report(pruned_tiny_dir, str(tmp_path), dev, MRPC_DEMO_PAIRS, runs=3, speed=False)
    assert report["parity"]["max_abs_logit_diff"] <= 1e-4
    assert report["zeros"]["tf"] == report["zeros"]["onnx"] >= 4 * round(0.6 * 32 * 64)
    assert report["dev"]["identical_predictions_fp32_vs_tf"] == report["dev"]["identical_predictions_fp32_fused_vs_tf"] == 1.0
    assert report["fusion"]["used"] and report["fusion"]["max_abs_logit_diff"] <= 1e-4
    assert report["dev"]["fp32_fused"] == report["dev"]["fp32"]
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert "Erf" in {node.op_type for node in graph.node}  # GELU made it through (Erfc handled)
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]

    from transformers import TFBertForSequenceClassification

    model = TFBertForSequenceClassification.from_pretrained(pruned_tiny_dir)
    sessions = {name: export.session(str(tmp_path / f"model{suffix}.onnx"))
                for name, suffix in (("fp32", ""), ("fused", ".fused"), ("int8", ".int8"))}
    rng = np.random.default_rng(0)
    for batch, length in ((1, 7), (3, 19)):  # dynamic batch and sequence axes, padding in the second
        mask = np.ones((batch, length), np.int64)
        mask[1:, length // 2:] = 0
        feed = {"input_ids": rng.integers(5, model.config.vocab_size, (batch, length)), "attention_mask": mask,
                "token_type_ids": (np.arange(length) >= length // 3).astype(np.int64)[None].repeat(batch, 0)}
        expected = model({k: tf.constant(v, tf.int32) for k, v in feed.items()}).logits.numpy()
        for name in ("fp32", "fused"):
            got = sessions[name].run(["logits"], export.ort_feed(sessions[name], feed))[0]
            assert got.shape == (batch, 2)
            np.testing.assert_allclose(got, expected, atol=1e-4)
        int8 = sessions["int8"].run(["logits"], export.ort_feed(sessions["int8"], feed))[0]
        # INT8 computes nearly what fp32 does: same shape, logits within quantization error, same classes
        assert int8.shape == (batch, 2)
        np.testing.assert_allclose(int8, expected, atol=0.05 * np.abs(expected).max() + 0.02)
        assert (int8.argmax(1) == expected.argmax(1)).all() or np.abs(np.diff(expected, axis=1)).min() < 0.05
    assert json.loads((tmp_path / "onnx_report.json").read_text())["zeros"]["onnx"] == report["zeros"]["onnx"]


@pytest.mark.slow
def test_bert_export_of_a_regressor_scores_it_with_its_task_metrics(tiny_regression_bert_dir, mrpc_dir, tmp_path):
    """An STS-B model: dev scored by Spearman and Pearson of the first logit (not an argmax over one column),
    the demo pairs given their scores; a single-sentence task is refused."""
    from tfprune.export.bert_report import encode_pairs, format_report
    from tfprune.tasks.glue import load_mrpc
    from tfprune.tasks.glue_tasks import TASKS
    from tfprune.tasks.metrics import pearson, spearman

    pairs = [(a, b) for a, b, _ in load_mrpc(mrpc_dir)[0]["dev"]]
    model, tokenizer, _ = bert.load_classifier(tiny_regression_bert_dir, num_labels=1)
    scores = model(encode_pairs(tokenizer, pairs)).logits.numpy()[:, 0]
    # gold scores in the model's order but for one swap: a strong correlation, where a constant prediction
    # (an argmax over the one output) would score 0
    labels = 5 * np.argsort(np.argsort(scores)) / (len(pairs) - 1)
    labels[[0, 1]] = labels[[1, 0]]
    rows = [(a, b, float(label)) for (a, b), label in zip(pairs, labels)]
    report = export_and_report(tiny_regression_bert_dir, str(tmp_path), rows, pairs[:2], speed=False,
                               task=TASKS["stsb"])
    assert report["task"] == "stsb" and sorted(report["dev"]["tf"]) == ["pearson", "spearman"]
    assert report["fusion"]["used"], report["fusion"]  # its classifier's one-element bias read as a scalar
    assert report["dev"]["tf"]["spearman"] == pytest.approx(spearman(labels, scores), abs=1e-4)
    assert report["dev"]["tf"]["pearson"] == pytest.approx(pearson(labels, scores), abs=1e-4)
    assert report["dev"]["tf"]["spearman"] > 0.5
    assert report["dev"]["max_abs_score_diff_fp32_vs_tf"] <= 1e-4
    assert [d["score"] for d in report["demo"]] == pytest.approx(scores[:2].tolist(), abs=1e-4)
    text = format_report(report)
    assert "spearman %" in text and "max |score difference| vs TF: fp32 " in text
    with pytest.raises(TfpruneError, match="cola is a single-sentence task"):
        export_and_report(tiny_regression_bert_dir, str(tmp_path / "cola"), None, pairs[:1], speed=False,
                          task=TASKS["cola"])


@pytest.mark.slow
def test_bert_fusion_gives_ort_one_kernel_per_block(pruned_tiny_dir, tmp_path):
    """The rewrites in export.fusion are what let ORT fuse a tf2onnx BERT: every layer's attention in one
    Attention node, residual + LayerNorm as SkipLayerNormalization (then split into Add + the vectorized
    LayerNormalization), GELU with its bias; the fused file computes the export's logits; INT8 then quantizes
    attention."""
    from transformers import TFBertForSequenceClassification

    from tfprune.export.fusion import optimize_bert

    model = TFBertForSequenceClassification.from_pretrained(pruned_tiny_dir)
    export.export_bert(model, str(tmp_path / "model.onnx"))
    config = model.config
    result = optimize_bert(str(tmp_path / "model.onnx"), str(tmp_path / "fused.onnx"), config.num_attention_heads,
                           config.hidden_size)
    layers = config.num_hidden_layers
    assert result["rewrites"] == {"reduce_mean": 2 * (2 * layers + 1), "tensordot": 6 * layers, "gelu": layers,
                                  "mask": 2, "skip_layer_norm_split": 2 * layers}
    assert result["fused"] == {"EmbedLayerNormalization": 1, "Attention": layers, "BiasGelu": layers,
                               "SkipLayerNormalization": 2 * layers}
    fused_ops = [node.op_type for node in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert "SkipLayerNormalization" not in fused_ops and fused_ops.count("LayerNormalization") == 2 * layers
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(5, config.vocab_size, (3, 17)), "token_type_ids": np.zeros((3, 17), np.int64),
            "attention_mask": np.ones((3, 17), np.int64)}
    feed["attention_mask"][1, 11:] = 0
    logits = []
    for name in ("model.onnx", "fused.onnx"):
        sess = export.session(str(tmp_path / name))
        types = {i.name: i.type for i in sess.get_inputs()}
        logits.append(sess.run(None, {k: v.astype(np.int32 if "int32" in types[k] else np.int64)
                                      for k, v in feed.items()})[0])
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-5)
    export.quantize_int8(str(tmp_path / "fused.onnx"), str(tmp_path / "int8.onnx"))
    ops = {node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QAttention", "MatMulInteger"} <= ops and "Erf" not in ops


def test_mlp_export_dense_and_pruned_parity(tmp_path):
    x = np.random.default_rng(1).random((5, 784), dtype=np.float32)
    for name, prune in (("dense", False), ("pruned", True)):
        model = build_mlp(prunable=prune, seed=0)
        if prune:
            for layer in prunable_layers(model):
                layer.prune_to(0.9)
            model = strip_model(model)
        path = str(tmp_path / f"{name}.onnx")
        report = export.export_keras_checked(model, path, x)
        assert report["max_abs_logit_diff"] <= 1e-4
        sess = export.session(path)
        for batch in (1, 5):  # dynamic batch axis
            got = sess.run(None, {sess.get_inputs()[0].name: x[:batch]})[0]
            np.testing.assert_allclose(got, model(x[:batch]).numpy(), atol=1e-4)
        zeros = export.initializer_zeros(path, [w.numpy() for w in model.weights])
        assert [z["onnx_zeros"] for z in zeros] == [z["tf_zeros"] for z in zeros]
        assert report["zeros"] == sum(z["onnx_zeros"] for z in zeros)
        if prune:
            assert zeros[0]["onnx_zeros"] == round(0.9 * 784 * 1000)


def test_export_cli_bad_paths(tmp_path):
    assert_one_line_error(run("-m", "tfprune.export", str(tmp_path / "missing")), "does not exist")
    (tmp_path / "not_a_model").mkdir()
    assert_one_line_error(run("-m", "tfprune.export", str(tmp_path / "not_a_model")), "neither a train_mrpc.py run folder")


def test_erfc_handler_is_what_makes_exact_gelu_convert(tmp_path):
    """TF 2.21 lowers exact GELU to Erfc, which tf2onnx 1.17 cannot convert on its own."""
    import tf2onnx

    spec = (tf.TensorSpec((None, 4), tf.float32, name="x"),)
    gelu = tf.function(lambda x: tf.nn.gelu(x, approximate=False), input_signature=spec)
    assert "Erfc" in {op.type for op in gelu.get_concrete_function().graph.get_operations()}
    # without the handler tf2onnx only logs "Erfc is not supported" and writes a model ORT cannot load
    tf2onnx.convert.from_function(gelu, input_signature=spec, opset=17, output_path=str(tmp_path / "no.onnx"))
    assert "Erfc" in {node.op_type for node in onnx.load(str(tmp_path / "no.onnx")).graph.node}
    with pytest.raises(Exception, match="Erfc"):
        export.session(str(tmp_path / "no.onnx"))
    tf2onnx.convert.from_function(gelu, input_signature=spec, opset=17, custom_op_handlers=CUSTOM_HANDLERS,
                                  output_path=str(tmp_path / "gelu.onnx"))
    x = np.linspace(-8, 8, 64, dtype=np.float32).reshape(16, 4)
    got = export.session(str(tmp_path / "gelu.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, gelu(x).numpy(), atol=1e-6)
    assert "Erfc" not in {node.op_type for node in onnx.load(str(tmp_path / "gelu.onnx")).graph.node}
