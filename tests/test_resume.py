"""A run killed with SIGKILL after a checkpoint and resumed gives bitwise the uninterrupted run: weights,
masks, metrics and results.json with its history (timings aside), dropout included (its generators' state
is in the checkpoint)."""
import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.helpers import ROOT, assert_one_line_error, run

# Runs train_mrpc with RunCheckpoint.save patched to SIGKILL the process after its n-th save.
KILLER = """
import os, signal, sys
from tfprune.cli import run
from tfprune.cli.train_mrpc import main
from tfprune.training import RunCheckpoint
original, saves = RunCheckpoint.save, []
def save(self, epoch, batch):
    original(self, epoch, batch)
    saves.append((epoch, batch))
    if len(saves) == int(os.environ["KILL_AFTER_SAVES"]):
        os.kill(os.getpid(), signal.SIGKILL)
RunCheckpoint.save = save
sys.exit(run(main, sys.argv[1:]))
"""
TIMINGS = {"train_seconds", "wall_seconds", "pruning_callback_seconds"}


def _args(model, data, out, *extra):
    return ["--model", model, "--data-dir", data, "--max-train-samples", "32", "--max-eval-samples", "16",
            "--batch-size", "8", "--epochs", "3", "--frequency", "1", "--checkpoint-every", "3",
            "--output-dir", str(out), *extra]


def _weights(folder):
    with h5py.File(folder / "model" / "tf_model.h5") as handle:
        found = {}
        handle.visititems(lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return found


def _comparable(results):
    results = {k: v for k, v in results.items() if k not in TIMINGS}
    results["arguments"] = {k: v for k, v in results["arguments"].items() if k not in ("output_dir", "resume")}
    return results


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert_dir, mrpc_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    result = run("train_mrpc.py", *_args(tiny_bert_dir, mrpc_dir, out), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("saves", [2, 3], ids=["after-an-epoch", "mid-epoch"])
def test_kill_and_resume_is_bitwise_the_uninterrupted_run(saves, uninterrupted, tiny_bert_dir,
                                                          mrpc_dir, tmp_path):
    out = tmp_path / "run"
    args = _args(tiny_bert_dir, mrpc_dir, out)
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "KILL_AFTER_SAVES": str(saves)}, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "checkpoints" / "checkpoint").is_file() and not (out / "results.json").exists()
    resumed = run("train_mrpc.py", *args, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _weights(uninterrupted), _weights(out)
    assert sorted(expected) == sorted(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    straight = json.loads((uninterrupted / "results.json").read_text())
    again = json.loads((out / "results.json").read_text())
    assert _comparable(again) == _comparable(straight)
    assert len(again["evaluations"]) == 3 and again["steps"] == 12
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".run.")]  # no stage or lock left


ADMM = ["--admm", "--final-sparsity", "0.5", "--admm-epochs", "2", "--admm-iterations", "3"]


@pytest.mark.slow
@pytest.mark.parametrize("saves", [3, 5], ids=["under-the-penalty", "after-the-hard-prune"])
def test_admm_killed_and_resumed_is_bitwise_the_uninterrupted_run(saves, tiny_bert_dir, mrpc_dir, tmp_path):
    """ADMM's Z, U and rho live outside the model: the checkpoint carries them (Z/U updates at steps 2, 4, 6,
    the hard prune at step 8; the kills land at step 6 and step 9)."""
    straight = tmp_path / "straight"
    result = run("train_mrpc.py", *_args(tiny_bert_dir, mrpc_dir, straight, *ADMM), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "run"
    args = _args(tiny_bert_dir, mrpc_dir, out, *ADMM)
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "KILL_AFTER_SAVES": str(saves)}, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run("train_mrpc.py", *args, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _weights(straight), _weights(out)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    again, first = (json.loads((d / "results.json").read_text()) for d in (out, straight))
    assert _comparable(again) == _comparable(first)
    assert [h["step"] for h in again["admm"]["history"]] == [0, 2, 4, 6] and again["admm"]["updates"] == 3


def test_resume_refuses_other_settings_and_unreadable_checkpoints(uninterrupted, tiny_bert_dir,
                                                                  mrpc_dir, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    args = _args(tiny_bert_dir, mrpc_dir, out)
    result = run("train_mrpc.py", *args, "--resume", "--learning-rate", "1e-3", timeout=300)
    assert_one_line_error(result, "was written with other settings (learning_rate: 2e-05 then, 0.001 now)")
    for data in (out / "checkpoints").glob("*.data-*"):
        data.write_bytes(data.read_bytes()[:100])  # truncated
    assert_one_line_error(run("train_mrpc.py", *args, "--resume", timeout=300), "cannot be restored")
    empty = tmp_path / "empty"
    assert_one_line_error(run("train_mrpc.py", *_args(tiny_bert_dir, mrpc_dir, empty), "--resume"),
                          "no checkpoint to resume from")
    assert not empty.exists()


def test_a_checkpoint_that_cannot_be_written_is_one_error(tmp_path, monkeypatch):
    import tensorflow as tf

    from tfprune import TfpruneError
    from tfprune._keras import keras
    from tfprune.training import RunCheckpoint

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    checkpoint = RunCheckpoint(str(tmp_path / "checkpoints"), {"seed": 1})
    checkpoint.set_model(model)

    def full_disk(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full_disk)
    with pytest.raises(TfpruneError, match="cannot write a checkpoint in .*No space left on device"):
        checkpoint.save(1, 0)


def test_dropout_state_is_saved_and_restored(tmp_path):
    """With checkpointable_dropout, every Dropout draws from a generator the checkpoint holds: restoring it
    replays the same masks; without the flag the layers have none to save."""
    import tensorflow as tf

    from tfprune._keras import keras
    from tfprune.training import checkpointable_dropout, random_generators

    experimental = keras.backend.experimental
    was_enabled = experimental.is_tf_random_generator_enabled()  # the CLIs, run in this process, enable it
    experimental.disable_tf_random_generator()
    try:
        assert random_generators(keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.5)])) == {}
        checkpointable_dropout()
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5), keras.layers.Dropout(0.5)])
        generators = random_generators(model)
        assert len(generators) == 2
        checkpoint = tf.train.Checkpoint(rng=generators)
        path = checkpoint.save(str(tmp_path / "ckpt"))
        ones = tf.ones((8, 64))
        first = [model(ones, training=True).numpy() for _ in range(3)]
        assert not np.array_equal(first[0], first[1])  # the state advances
        checkpoint.restore(path).assert_consumed()
        again = [model(ones, training=True).numpy() for _ in range(3)]
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    finally:
        (experimental.enable_tf_random_generator if was_enabled else experimental.disable_tf_random_generator)()
