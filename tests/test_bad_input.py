"""Bad input and faults a user can cause: one `error:` line, exit code 2, no traceback, nothing written in or
beside the output directory. Run in-process through `cli.run` (the front doors' own wrapper), plus a few
subprocesses for the whole path."""
import gzip
import json
import os

import numpy as np
import pytest

from tests.helpers import assert_one_line_error, run
from tfprune import cli
from tfprune.cli import lenet_pruning, mnist_challenge, token_lstm, token_search, train_mrpc


class Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def call(main, argv, capsys):
    code = cli.run(main, argv)
    return Result(code, capsys.readouterr().err)


def assert_nothing_written(folder):
    parent = folder.parent
    assert not folder.exists() or folder.is_file()
    assert not [p.name for p in parent.iterdir() if p.name.startswith(f".{folder.name}.")]


MRPC_CASES = [
    (["--max-train-samples", "0"], "--max-train-samples must be >= 1"),
    (["--max-train-samples", "-3600"], "--max-train-samples must be >= 1"),
    (["--max-eval-samples", "-1"], "--max-eval-samples must be >= 1"),
    (["--max-seq-length", "1"], "--max-seq-length must be >= 8"),
    (["--warmup-ratio", "5"], "--warmup-ratio must be in [0, 1]"),
    (["--warmup-ratio", "-0.1"], "--warmup-ratio must be in [0, 1]"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number > 0"),
    (["--learning-rate", "0"], "--learning-rate must be a finite number > 0"),
    (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "-2"], "--batch-size must be >= 1"),
    (["--frequency", "0"], "--frequency must be >= 1"),
    (["--log-every", "-1"], "--log-every must be >= 0"),
    (["--begin-step", "-5"], "--begin-step must be >= 0"),
    (["--final-sparsity", "1"], "sparsity must be in [0, 1)"),
    (["--final-sparsity", "abc"], "sparsity must be a number"),
    (["--exponent", "nan"], "exponent must be a finite number > 0"),
    (["--exponent", "0"], "exponent must be a finite number > 0"),
    (["--pattern", "diagonal"], "pattern must be one of"),
    (["--pattern", "nm", "--nm", "2-4"], "nm must look like N:M"),
    (["--pattern", "nm", "--nm", "4:2"], "N:M needs 1 <= n < m"),
    (["--pattern", "nm", "--final-sparsity", "0.7"], "sparsity 0.7 exceeds what 2:4 allows"),
    (["--pattern", "nm", "--nm", "2:3"], "layer_0/ffn_up: 2:3 needs rows (32) divisible by m=3"),
    (["--pattern", "nm", "--global-ranking", "--final-sparsity", "0.5"], "global ranking does not apply"),
    (["--pattern", "block", "--block-size", "100"], "block_size 100 is larger than"),
    (["--pattern", "block", "--block-size", "0"], "block_size must be a positive integer"),
    (["--prune-scope", "heads"], "--prune-scope must be one of"),
    (["--token-pruning", "0.1,0.2,0.3"], "lists 3 rates; the model has 2 layers"),
    (["--token-pruning", "0,1"], "rate 1 for layer 1 is outside [0, 1)"),
    (["--token-pruning", "0.1,fast"], "comma-separated list of rates"),
    (["--keep-sep"], "--keep-sep applies to token pruning"),
    (["--data-dir", "/nonexistent/MRPC"], "data directory /nonexistent/MRPC does not exist"),
    (["--model", "/nonexistent/model"], "model directory /nonexistent/model does not exist"),
]


@pytest.mark.parametrize("extra, fragment", MRPC_CASES, ids=[" ".join(c[0]) for c in MRPC_CASES])
def test_train_mrpc_rejects(extra, fragment, tiny_bert_dir, mrpc_dir, tmp_path, capsys):
    out = tmp_path / "never"
    args = ["--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--output-dir", str(out), "--epochs", "1", *extra]
    if extra[0] == "--data-dir" or extra[0] == "--model":
        args = ["--output-dir", str(out), *extra, *(["--model", tiny_bert_dir] if extra[0] == "--data-dir" else
                                                     ["--data-dir", mrpc_dir])]
    try:
        result = call(train_mrpc.main, args, capsys)
    except SystemExit as exit_:  # argparse's own one-line errors
        result = Result(exit_.code, capsys.readouterr().err)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


SCHEDULE_CONFIGS = [
    ({"frequency": "ten"}, "frequency must be an integer, got 'ten'"),
    ({"final_sparsity": "most"}, "sparsity must be a number"),
    ({"final_sparsity": 1.5}, "sparsity must be in [0, 1)"),
    ({"global_ranking": "yes"}, "global_ranking must be true or false"),
    ({"block_size": [4]}, "block_size must be a single value"),
    ({"speed": "fast"}, "unknown key(s) ['speed']"),
    ([0.5], "expected a JSON object"),
]


@pytest.mark.parametrize("config, fragment", SCHEDULE_CONFIGS, ids=[str(c[0]) for c in SCHEDULE_CONFIGS])
def test_schedule_config_values_are_typed(config, fragment, tiny_bert_dir, mrpc_dir, tmp_path, capsys):
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "never"
    result = call(train_mrpc.main, ["--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--output-dir", str(out),
                                    "--schedule-config", str(path)], capsys)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


def _corrupt_copy(source, tmp_path, name, content):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in os.listdir(source):
        data = open(os.path.join(source, item), "rb").read()
        (folder / item).write_bytes(content(data) if item == name else data)
    return folder


@pytest.mark.parametrize("name, content, fragment", [
    ("config.json", lambda data: data[: len(data) // 2], "config.json is not a readable model configuration"),
    ("config.json", lambda data: b"\x00\xff garbage", "config.json is not a readable model configuration"),
    ("tf_model.h5", lambda data: data[: len(data) // 3], "tf_model.h5 is not a readable TF BERT checkpoint"),
    ("tf_model.h5", lambda data: b"not hdf5 at all", "tf_model.h5 is not a readable TF BERT checkpoint"),
], ids=["config-truncated", "config-garbage", "h5-truncated", "h5-garbage"])
def test_corrupt_model_files(name, content, fragment, tiny_bert_dir, mrpc_dir, tmp_path, capsys):
    folder = _corrupt_copy(tiny_bert_dir, tmp_path, name, content)
    out = tmp_path / "never"
    result = call(train_mrpc.main, ["--model", str(folder), "--data-dir", mrpc_dir, "--output-dir", str(out)], capsys)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


def test_corrupt_safetensors(tmp_path, capsys):
    from tfprune import TfpruneError
    from tfprune.models import bert

    source = bert.packaged_minilm_dir()
    if source is None:
        pytest.skip("the packaged MiniLM (setup.sh installs it) is not here")
    folder = tmp_path / "model"
    folder.mkdir()
    for item in os.listdir(source):
        path = os.path.join(source, item)
        if os.path.isfile(path) and not item.endswith((".h5", ".bin", ".onnx")):
            data = open(path, "rb").read()
            (folder / item).write_bytes(data[:1000] if item.endswith(".safetensors") else data)
    with pytest.raises(TfpruneError, match="model.safetensors is not a readable safetensors file"):
        bert.load_classifier(str(folder))


@pytest.mark.parametrize("kind", ["file", "unwritable", "locked"])
def test_output_directory_problems(kind, tiny_bert_dir, mrpc_dir, tmp_path, capsys):
    import fcntl

    out = tmp_path / "runs" / "out"
    out.parent.mkdir()
    fragment = {"file": "is a file", "unwritable": "cannot write into", "locked": "is in use by another run"}[kind]
    holder = None
    if kind == "file":
        out.write_text("a file")
    elif kind == "unwritable":
        if os.geteuid() == 0:  # root writes anywhere: a read-only parent is simulated with a file as parent
            out = tmp_path / "runs" / "plainfile" / "out"
            (tmp_path / "runs" / "plainfile").write_text("x")
            fragment = "cannot create the output directory's parent"
        else:
            out.parent.chmod(0o500)
    else:
        holder = open(out.parent / ".out.lock", "a+")
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    result = call(train_mrpc.main, ["--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--output-dir", str(out)], capsys)
    assert_one_line_error(result, fragment)
    if holder is not None:
        holder.close()
    if out.parent.is_dir():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.staging-")]


def _write_idx(folder, images, labels, stem="train"):
    for array, kind, code in ((images, "images-idx3", 3), (labels, "labels-idx1", 1)):
        header = bytes([0, 0, 8, code]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(folder / f"{stem}-{kind}-ubyte.gz", "wb") as handle:
            handle.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("fault, fragment", [
    ("label", "label 12 at index 3 is outside 0..9"),
    ("gzip", "is not a readable gzip file"),
    ("truncated", "is truncated"),
    ("count", "images but"),
])
def test_mnist_bad_idx_files(fault, fragment, tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    images, labels = np.zeros((8, 28, 28), np.uint8), np.arange(8) % 10
    if fault == "label":
        labels[3] = 12
    if fault == "count":
        labels = labels[:5]
    _write_idx(folder, images, labels, "train")
    _write_idx(folder, images, np.arange(8) % 10, "t10k")
    if fault == "gzip":
        (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    if fault == "truncated":
        path = folder / "train-images-idx3-ubyte.gz"
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[:-100]))
    out = tmp_path / "never"
    result = call(mnist_challenge.main, ["--data-dir", str(folder), "--output-dir", str(out)], capsys)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


@pytest.mark.parametrize("extra, fragment", [
    (["--max-train-samples", "0"], "--max-train-samples must be >= 1"),
    (["--max-test-samples", "-5"], "--max-test-samples must be >= 1"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number > 0"),
    (["--l1", "-1"], "--l1 must be a finite number >= 0"),
    (["--dropout", "1"], "--dropout must be in [0, 1)"),
    (["--finetune-epochs", "-1"], "--finetune-epochs must be >= 0"),
    (["--speed-runs", "0"], "--speed-runs must be >= 1"),
])
def test_mnist_rejects(extra, fragment, tmp_path, capsys):
    out = tmp_path / "never"
    result = call(mnist_challenge.main, ["--output-dir", str(out), *extra], capsys)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


@pytest.mark.parametrize("extra, fragment", [
    (["--sparsities", "0.5,1.2"], "--sparsities values must be in [0, 1)"),
    (["--methods", "oneshot,magic"], "--methods must list some of"),
    (["--nested-levels", "0.5,0.5"], "--nested-levels repeats a value"),
    (["--admm-rho-growth", "0.5"], "--admm-rho-growth must be a finite number >= 1"),
    (["--admm-fraction", "1"], "--admm-fraction must be in (0, 1)"),
    (["--prune-epochs", "1"], "ADMM needs --prune-epochs >= 2"),
    (["--epochs", "0"], "--epochs must be >= 1"),
])
def test_lenet_pruning_rejects(extra, fragment, tmp_path, capsys):
    out = tmp_path / "never"
    result = call(lenet_pruning.main, ["--output-dir", str(out), *extra], capsys)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


@pytest.mark.parametrize("extra, fragment", [
    (["--target-speedup", "1"], "--target-speedup must be a finite number > 1"),
    (["--target-speedup", "inf"], "--target-speedup must be a finite number > 1"),
    (["--flops-budget", "0"], "--flops-budget must be > 0"),
    (["--target-speedup", "2", "--step", "1.5"], "--step and --max-rate must lie in (0, 1)"),
    (["--target-speedup", "2", "--model", "/nonexistent/run"], "--model /nonexistent/run does not exist"),
    (["--target-speedup", "50"], "a speed-up of 50x is out of reach"),
])
def test_token_search_rejects(extra, fragment, tiny_bert_dir, mrpc_dir, tmp_path, capsys):
    out = tmp_path / "never"
    args = ["--model", tiny_bert_dir, "--task", "mrpc", "--data-dir", mrpc_dir, "--output-dir", str(out)]
    result = call(token_search.main, [*args, *extra], capsys)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


@pytest.mark.parametrize("extra, fragment", [
    (["--rates", "0.5,1.2"], "--rates needs distinct rates in [0, 1)"),
    (["--rates", "0.5,0.5"], "--rates needs distinct rates in [0, 1)"),
    (["--rates", "half"], "--rates is a comma-separated list"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--tokenizer", "/nonexistent/tok"], "--tokenizer /nonexistent/tok does not exist"),
])
def test_token_lstm_rejects(extra, fragment, mrpc_dir, tmp_path, capsys):
    out = tmp_path / "never"
    result = call(token_lstm.main, ["--task", "mrpc", "--data-dir", mrpc_dir, "--output-dir", str(out), *extra],
                  capsys)
    assert_one_line_error(result, fragment)
    assert_nothing_written(out)


@pytest.mark.parametrize("extra, fragment", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--samples", "-1"], "--samples must be >= 1"),
    (["--frequency", "0"], "--frequency must be >= 1"),
    (["--batch-size", "x"], "invalid int value"),
])
def test_benchmark_rejects(extra, fragment):
    assert_one_line_error(run("benchmarks/mlp_overhead.py", *extra), fragment)


def test_no_tensorflow_noise_in_a_cli_error(tmp_path):
    """TensorFlow's C++ start-up lines (one of them says "error:") are silenced: the user sees one line."""
    result = run("mnist_challenge.py", "--ks", "200", "--output-dir", str(tmp_path / "o"), env={"TF_CPP_MIN_LOG_LEVEL": ""})
    assert_one_line_error(result, "--ks values must be in [0, 100)")
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_a_diverging_run_stops_with_one_line_and_leaves_nothing(tiny_bert_dir, mrpc_dir, tmp_path):
    out = tmp_path / "diverged"
    result = run("train_mrpc.py", "--model", tiny_bert_dir, "--data-dir", mrpc_dir, "--max-train-samples", "32",
                 "--epochs", "2", "--batch-size", "8", "--frequency", "1", "--end-step", "3", "--learning-rate", "1e30",
                 "--output-dir", str(out), timeout=300)
    assert_one_line_error(result, "non-finite weights (NaN or inf) in layer_")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
