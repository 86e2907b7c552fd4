"""Structured pruning of BERT that pays: whole FFN neurons and attention heads pruned from train_glue, the
compacted model built, saved, reloaded (a plain Hugging Face checkpoint when uniform), exported to ONNX with
a one-head layer, and the interleaved timer's order and ratios. Tiny random BERTs with four heads."""
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import assert_one_line_error, run
from tfprune.cli import run as run_cli
from tfprune.cli import train_glue
from tfprune.export.interleaved import interleave, op_profile, ort_interleaved, summarize
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


def test_admm_removes_whole_neurons_and_heads_and_compacts(four_head_bert_dir, mrpc_dir, tmp_path, capsys):
    """ADMM on coupled groups: Z keeps whole neurons and heads, the hard prune after the ADMM epochs removes
    them, masked retraining keeps them removed, and the model compacts to the same logits."""
    out = tmp_path / "run"
    printed = _train(capsys, *_structured_run(four_head_bert_dir, mrpc_dir, out, "--admm", "--prune-neurons", "0.75",
                                              "--prune-heads", "0.5", "--epochs", "3", "--admm-epochs", "2",
                                              "--admm-iterations", "3", "--compact", "--max-train-samples", "32"))
    assert "ADMM for 2 epoch(s)" in printed.out and "compacted:" in printed.out
    results = json.loads((out / "results.json").read_text())
    assert results["run_name"] == "admm-neurons-0.75-heads-0.5"
    assert results["admm"]["updates"] == 3 and results["admm"]["hard_prune_step"] == 8
    assert results["structured"]["neurons"]["schedule"] is None
    assert [g["alive_in_weights"] for g in results["structured"]["neurons"]["groups"]] == [16] * 3
    assert [g["alive_in_weights"] for g in results["structured"]["heads"]["groups"]] == [2] * 3
    assert results["compact"]["layer_sizes"] == [{"intermediate_size": 16, "num_attention_heads": 2}] * 3
    assert results["compact"]["parity"]["identical_predictions"] == 1.0
    masked, _, _ = load_classifier(str(out / "model"))
    for layer in encoder_layers(masked):  # whole units: up column, bias and down row together
        up, bias = layer.intermediate.dense.kernel.numpy(), layer.intermediate.dense.bias.numpy()
        down = layer.bert_output.dense.kernel.numpy()
        gone = ~np.any(up != 0, axis=0)
        assert gone.sum() == 48 and (bias[gone] == 0).all() and (down[gone] == 0).all()
        assert np.all(np.any(down[~gone] != 0, axis=1))


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


def test_op_profile_counts_the_runs_after_the_warm_up():
    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 9000},
              {"cat": "Node", "name": "mm_kernel_time", "ts": 10, "dur": 8000, "args": {"op_name": "MatMul"}}]
    for ts in (100_000, 200_000):  # two runs after one warm-up: 2 MatMuls of 1 and 3 ms, a Relu of 0.5 ms
        events += [{"cat": "Session", "name": "model_run", "ts": ts, "dur": 5000},
                   {"cat": "Node", "name": "mm_fence_before", "ts": ts + 1, "dur": 7, "args": {"op_name": "MatMul"}},
                   {"cat": "Node", "name": "mm_kernel_time", "ts": ts + 1, "dur": 1000, "args": {"op_name": "MatMul"}},
                   {"cat": "Node", "name": "relu_kernel_time", "ts": ts + 2, "dur": 500, "args": {"op_name": "Relu"}},
                   {"cat": "Node", "name": "mm2_kernel_time", "ts": ts + 3, "dur": 3000, "args": {"op_name": "MatMul"}}]
    profile = op_profile(events, warmup=1)
    assert profile["runs"] == 2 and profile["run_ms"] == pytest.approx(5.0)
    assert list(profile["ops"]) == ["MatMul", "Relu"]
    assert profile["ops"]["MatMul"] == {"ms": pytest.approx(4.0), "nodes": 2}
    assert profile["ops"]["Relu"] == {"ms": pytest.approx(0.5), "nodes": 1}
    with pytest.raises(ValueError, match="no run after the 3 warm-up runs"):
        op_profile(events, warmup=3)


def test_interleaved_timing_profiles_every_node_of_each_model(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    paths = {}
    for name, width in (("wide", 64), ("narrow", 16)):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"]), helper.make_node("Sigmoid", ["y"], ["z"])], name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])],
            [numpy_helper.from_array(rng.normal(size=(8, width)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(width, 4)).astype(np.float32), "w2")])
        paths[name] = str(tmp_path / f"{name}.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), paths[name])
    np.savez(tmp_path / "inputs.npz", **{"b2/x": rng.normal(size=(2, 8)).astype(np.float32)})
    result = ort_interleaved(paths, str(tmp_path / "inputs.npz"), {"b2": ["b2"]}, {"b2": 3}, 1, "wide", [],
                             str(tmp_path / "spec.json"), profile={"b2": 4})
    assert result["b2"]["wide"]["iterations"] == 3 and result["b2"]["wide"]["speedup"] == 1.0
    for name in paths:
        profile = result["op_profile"]["b2"][name]
        assert profile["runs"] == 4
        assert {op: entry["nodes"] for op, entry in profile["ops"].items()} == {"MatMul": 2, "Relu": 1, "Sigmoid": 1}
        assert 0 < sum(entry["ms"] for entry in profile["ops"].values()) <= profile["run_ms"]
    assert sorted(os.listdir(tmp_path)) == ["inputs.npz", "narrow.onnx", "spec.json", "wide.onnx"]


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="sets the x86-64 MXCSR")
def test_the_timing_process_flushes_denormals_in_threads_it_starts_afterwards():
    # ONNX Runtime's shared pool starts its threads after the flag is set; a product below float32's
    # smallest normal (1.2e-38) must then be 0 in the calling thread and in a new one
    code = """
import threading
import numpy as np
from tfprune.export.interleaved import flush_denormals_in_process
tiny = np.float32(1e-38)
before = float(tiny * np.float32(1e-3))
flush_denormals_in_process()
seen = []
thread = threading.Thread(target=lambda: seen.append(float(tiny * np.float32(1e-3))))
thread.start()
thread.join()
print(before > 0, float(tiny * np.float32(1e-3)), seen[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "0.0", "0.0"]


def test_latency_benchmark_times_and_profiles_a_model_and_its_compacted_self(four_head_bert_dir, mrpc_dir, tmp_path):
    out = tmp_path / "latency"
    result = run("benchmarks/bert_latency.py", "--model", f"dense={four_head_bert_dir}", "--model",
                 f"same={four_head_bert_dir}", "--data-dir", mrpc_dir, "--output-dir", str(out), "--iterations", "2",
                 "--dev-examples", "2", "--profile-runs", "4", "--alone-runs", "3", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "latency.json") as handle:
        latency = json.load(handle)
    assert sorted(latency["timings"]) == ["batch1_dev", "batch1_len128", "batch32_dev", "batch32_dev_pad128",
                                          "batch32_len128"]
    assert latency["timings"]["batch1_len128"]["dense fp32"]["speedup"] == 1.0
    assert sorted(latency["op_profile"]) == ["batch1_len128", "batch32_len128"]
    for set_name, runs in (("batch1_len128", 4), ("batch32_len128", 1)):
        profiles = latency["op_profile"][set_name]
        assert sorted(profiles) == ["dense fp32", "dense int8", "same fp32", "same int8"]
        assert all(profile["runs"] == runs for profile in profiles.values())
        # the same model exported twice runs the same nodes; three layers: one softmax each (this tiny
        # width is not fused into ORT's Attention), and INT8 products in the quantized files only
        assert profiles["dense fp32"]["ops"].keys() == profiles["same fp32"]["ops"].keys()
        assert all(profile["ops"]["Softmax"]["nodes"] == 3 for profile in profiles.values())
        assert "DynamicQuantizeMatMul" in profiles["dense int8"]["ops"]
        assert "DynamicQuantizeMatMul" not in profiles["dense fp32"]["ops"]
    # each file alone in its own process: 3 runs at batch 1, 10 at batch 32 (a fifth, at least 10)
    assert sorted(latency["alone"]) == ["dense fp32", "dense int8", "same fp32", "same int8"]
    assert all(entry["1"]["runs"] == 3 and entry["32"]["runs"] == 10 and entry["1"]["p50"] > 0
               for entry in latency["alone"].values())
    assert "each file alone at length 128" in result.stdout
    assert "where the time goes" in result.stdout and "between ops ms (share)" in result.stdout
    assert sorted(os.listdir(out)) == ["dense", "latency.json", "same"]
