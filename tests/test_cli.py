"""The CLIs end to end on small data, and their bad-input contract: one error line, exit code 2, no outputs."""
import json
import os

import pytest

from tests.helpers import assert_one_line_error, run


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    """A small Fashion-MNIST slice as IDX files (first 3000 train / 1000 test), from the Debian package."""
    import gzip

    import numpy as np

    from tfprune.tasks.images import DEBIAN_DIRS, load_idx_folder

    source = DEBIAN_DIRS["fashion_mnist"]
    if not os.path.isdir(source):
        pytest.fail("apt-get install dataset-fashion-mnist (the README's set-up) is needed for the MNIST tests")
    folder = tmp_path_factory.mktemp("fmnist")
    splits = load_idx_folder(source)
    for split, count in (("train", 3000), ("test", 1000)):
        images, labels = splits[split][0][:count], splits[split][1][:count]
        stem = "train" if split == "train" else "t10k"
        for array, kind, code in ((images, "images-idx3", 3), (labels, "labels-idx1", 1)):
            header = bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
            with gzip.open(folder / f"{stem}-{kind}-ubyte.gz", "wb") as handle:
                handle.write(header + array.astype(np.uint8).tobytes())
    return str(folder)


@pytest.mark.slow
def test_mnist_challenge_small_run(idx_dir, tmp_path):
    out = tmp_path / "mnist"
    result = run("mnist_challenge.py", "--data-dir", idx_dir, "--epochs", "1", "--output-dir", str(out),
                 "--speed-runs", "3", "--export-onnx", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    ks = [0, 25, 50, 60, 70, 80, 90, 95, 97, 99]
    for method in ("weight", "unit"):
        assert [r["k"] for r in rows if r["method"] == method] == ks
        for r in rows:
            if r["method"] == method:
                # 4 layers, each within one element of k %: the pooled fraction is within 4 elements
                assert abs(r["sparsity_prunable"] - r["k"] / 100) <= 4 / 2_384_000
    k0 = [r["accuracy"] for r in rows if r["k"] == 0]
    assert k0 == [results["dense_accuracy"]] * 2
    assert all(c["max_abs_logit_diff"] < 1e-3 for c in results["compaction"])
    assert [c["hidden_units"] for c in results["compaction"] if c["k"] == 90] == [[100, 100, 50, 20]]
    for name in ("results.csv", "sparsity_vs_accuracy.png", "speedup.json"):
        assert (out / name).is_file()
    assert "| weight | 90 | no |" in result.stdout and "| unit | 70 | no |" in result.stdout
    onnx_rows = {r["model"]: r for r in results["onnx"]}
    assert sorted(onnx_rows) == ["dense", "unit90", "weight90"]
    assert all(r["max_abs_logit_diff"] <= 1e-4 for r in onnx_rows.values())
    assert onnx_rows["weight90"]["zeros"] == sum(round(0.9 * n) for n in (784_000, 1_000_000, 500_000, 100_000))
    assert onnx_rows["weight90"]["gzip_bytes"] < onnx_rows["dense"]["gzip_bytes"] / 3


def test_mnist_pruned_structure_and_untouched_logits(idx_dir):
    """Unit-pruned layers have whole zero columns; the logits kernel is never pruned."""
    import numpy as np

    from tfprune import challenge
    from tfprune.tasks.images import load_images

    data, _ = load_images("fashion_mnist", idx_dir)
    x, y = data["train"]
    dense = challenge.train_dense(x[:512], y[:512], 1, 256, 1e-3, 0, verbose=0)
    logits_before = challenge.network_kernels(dense)[-1].numpy()
    for k in (50, 90):
        model = challenge.one_shot(dense, "unit", k)
        kernels = [v.numpy() for v in challenge.network_kernels(model)]
        for kernel in kernels[:-1]:
            column_zeros = (kernel == 0).all(axis=0)
            assert column_zeros.sum() == round(k / 100 * kernel.shape[1])
            assert (kernel[:, ~column_zeros] != 0).all()  # kept units lost nothing
        np.testing.assert_array_equal(kernels[-1], logits_before)


@pytest.mark.parametrize("args, fragments", [
    (["--ks", "0,50,100"], ["--ks values must be in [0, 100)", "100"]),
    (["--ks", "-5"], ["--ks values must be in [0, 100)"]),
    (["--dataset", "cifar10"], ["dataset must be one of"]),
])
def test_mnist_bad_input(args, fragments, tmp_path):
    out = tmp_path / "never"
    assert_one_line_error(run("mnist_challenge.py", "--output-dir", str(out), *args), *fragments)
    assert not out.exists()


def test_mnist_empty_data_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("mnist_challenge.py", "--data-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")),
                          "has no train-images-idx3-ubyte")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_mrpc_end_to_end_tiny(tiny_bert_dir, mrpc_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train_mrpc.py", "--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--max-train-samples", "32",
            "--epochs", "2", "--batch-size", "8", "--frequency", "1", "--output-dir", str(out)]
    result = run(*args, "--export-onnx", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["onnx"]["parity"]["max_abs_logit_diff"] <= 1e-4
    assert results["onnx"]["zeros"]["onnx"] == results["onnx"]["zeros"]["tf"] >= 4 * round(0.7 * 32 * 64)
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "onnx_report.json").is_file()
    assert results["steps"] == 8 and results["train_examples"] == 32
    assert results["measured_pruned_sparsity"] == pytest.approx(0.7, abs=0.001)
    assert results["measured_ffn_sparsity"] == results["measured_pruned_sparsity"]  # scope ffn: the same tensors
    assert 0.3 < results["measured_encoder_sparsity"] < results["measured_ffn_sparsity"]
    assert len(results["pruned_tensors"]) == 4
    assert len(results["evaluations"]) == 2
    # the F1 recorded is the F1 of the saved model on the dev rows, recomputed here from its predictions
    from tfprune.models import bert
    from tfprune.tasks.glue import PairBatches, load_mrpc
    from tfprune.tasks.metrics import binary_f1
    from tfprune.training import predict_logits

    model, tokenizer, _ = bert.load_classifier(str(out / "model"))
    dev = load_mrpc(mrpc_dir)[0]["dev"]
    batches = PairBatches(tokenizer, dev, 64)
    assert results["eval_f1"] == pytest.approx(binary_f1(batches.labels, predict_logits(model, batches).argmax(1)), abs=1e-9)
    for name in ("nonzero_vs_step.png", "model/tf_model.h5", "model/vocab.txt", "checkpoints/checkpoint"):
        assert (out / name).exists(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())

    # --resume after the last epoch: nothing left to train, same step and masks, same final numbers
    resumed = run(*args, "--resume", timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert again["steps"] == 8 and again["eval_f1"] == results["eval_f1"]
    assert again["measured_pruned_sparsity"] == results["measured_pruned_sparsity"]


@pytest.mark.parametrize("extra, fragments", [
    (["--final-sparsity", "1.2"], ["--final-sparsity", "sparsity must be in [0, 1)"]),
    (["--begin-step", "50", "--end-step", "10"], ["--begin-step must be >= 0 and < --end-step"]),
    (["--pattern", "diagonal"], ["pattern must be one of"]),
    (["--pattern", "block", "--block-size", "0"], ["block_size must be a positive integer"]),
    (["--frequency", "0"], ["--frequency must be >= 1"]),
    (["--data-dir", "/nonexistent/MRPC"], ["data directory /nonexistent/MRPC does not exist"]),
    (["--model", "/nonexistent/model"], ["model directory /nonexistent/model does not exist"]),
])
def test_train_mrpc_bad_input(extra, fragments, tiny_bert_dir, mrpc_dir, tmp_path):
    out = tmp_path / "never"
    args = ["train_mrpc.py", "--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--output-dir", str(out), *extra]
    assert_one_line_error(run(*args), *fragments)
    assert not out.exists()


@pytest.mark.slow
def test_train_mrpc_schedule_config(tiny_bert_dir, mrpc_dir, tmp_path):
    config = tmp_path / "schedule.json"
    config.write_text(json.dumps({"final_sparsity": 0.5, "pattern": "block", "block_size": 8, "frequency": 1}))
    out = tmp_path / "run"
    result = run("train_mrpc.py", "--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--max-train-samples", "16",
                 "--epochs", "1", "--batch-size", "8", "--schedule-config", str(config), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["pattern"]["name"] == "block" and results["pattern"]["block_size"] == 8
    assert results["schedule"]["final_sparsity"] == 0.5
    assert results["measured_ffn_sparsity"] == pytest.approx(0.5)  # 32x64 kernels: 8x8 blocks divide evenly
    config.write_text(json.dumps({"final_sparsity": 0.5, "speed": "fast"}))
    assert_one_line_error(run("train_mrpc.py", "--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--schedule-config",
                              str(config), "--output-dir", str(tmp_path / "o")), "unknown key(s) ['speed']")
    assert_one_line_error(run("train_mrpc.py", "--schedule-config", str(tmp_path / "missing.json")), "not found")


def test_train_mrpc_malformed_tsv_names_file_and_line(tiny_bert_dir, mrpc_dir, tmp_path):
    bad = tmp_path / "MRPC"
    bad.mkdir()
    lines = open(os.path.join(mrpc_dir, "train.tsv"), encoding="utf-8-sig").read().splitlines()
    lines[3] = "1\t123\tonly three fields"
    (bad / "train.tsv").write_text("\n".join(lines) + "\n")
    (bad / "dev.tsv").write_text(open(os.path.join(mrpc_dir, "dev.tsv"), encoding="utf-8-sig").read())
    result = run("train_mrpc.py", "--model", tiny_bert_dir, "--data-dir", str(bad), "--output-dir", str(tmp_path / "o"))
    assert_one_line_error(result, f"{bad / 'train.tsv'}:4: malformed row: expected 5 tab-separated fields, found 3")
    assert not (tmp_path / "o").exists()


def test_only_user_errors_become_one_line(capsys):
    """TfpruneError and unreadable files: one line, exit 2. Anything else is a bug: it propagates with its
    traceback (a numpy shape error is not a usage error)."""
    import numpy as np

    from tfprune import TfpruneError
    from tfprune.cli import run as run_cli

    def user_error(argv):
        raise TfpruneError("sparsity must be in [0, 1), got 2")

    def missing_file(argv):
        open("/nonexistent/file.tsv")

    def bug(argv):
        np.ones((2, 3)) @ np.ones((2, 3))

    assert run_cli(user_error) == 2 and capsys.readouterr().err.count("error:") == 1
    assert run_cli(missing_file) == 2 and "/nonexistent/file.tsv" in capsys.readouterr().err
    with pytest.raises(ValueError, match="matmul"):
        run_cli(bug)


def test_a_failed_run_removes_what_it_made_but_not_another_runs_folder(tmp_path):
    """Run A creates logs/ and fails while run B, started later, writes into logs/mrpc/b: B's folder and
    lock stay; a run that fails alone leaves nothing behind."""
    from tfprune.cli import claim_output_dir

    first = claim_output_dir(str(tmp_path / "logs" / "mrpc" / "a"))
    first.__enter__()
    second = claim_output_dir(str(tmp_path / "logs" / "mrpc" / "b"))
    os.makedirs(second.__enter__())
    assert first.__exit__(RuntimeError, RuntimeError("a bug"), None) is False  # the bug goes on up
    assert (tmp_path / "logs" / "mrpc" / "b").is_dir() and (tmp_path / "logs" / "mrpc" / ".b.lock").exists()
    assert not (tmp_path / "logs" / "mrpc" / "a").exists()
    second.__exit__(None, None, None)
    with pytest.raises(RuntimeError), claim_output_dir(str(tmp_path / "new" / "deep" / "run")) as folder:
        os.makedirs(folder)
        raise RuntimeError("a bug")
    assert not (tmp_path / "new").exists()
