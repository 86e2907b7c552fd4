"""The compiled ops (tfprune/csrc/prune_ops.cc): the mask update prunes the same weights as
`criteria.newly_pruned`, PruningStep with it gives the same masks as without it; the masked optimizer
update is exact."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfprune import PolynomialDecay, PrunableDense, PruningStep, native
from tfprune._keras import keras
from tfprune.criteria import newly_pruned, pruned_count

OPS = native.ops()
_SEEDS = range(6)


def needs_op(test):
    """Marked `native`, and skipped where the ops did not build (CI requires them: the first test)."""
    return pytest.mark.native(pytest.mark.skipif(OPS is None, reason="the ops are not built here")(test))
from tests.helpers import ROOT  # noqa: E402


def test_the_op_is_built_where_ci_requires_it():
    if os.environ.get("TFPRUNE_REQUIRE_NATIVE") != "1":
        pytest.skip("TFPRUNE_REQUIRE_NATIVE=1 (set by .ci/run) asks for the op")
    assert OPS is not None


def _layer(rng, shape, ties=False, kept_zeros=False):
    """A kernel already pruned at random to some sparsity (zeros where the mask is 0), and its mask."""
    kernel = rng.normal(size=shape).astype(np.float32)
    if ties:
        kernel = np.round(kernel, 1)  # thousands of equal magnitudes
    mask = (rng.random(shape) >= rng.random() * 0.6).astype(np.float32)
    kernel *= mask
    if kept_zeros:
        kernel[rng.random(shape) < 0.01] = 0.0
    return kernel, mask


def _prune(kernels, masks, targets, sparsity=0.25):
    """Runs the op on fresh variables; returns (added, nonzero, kernels, masks, sparsity values, reads
    taken before the op)."""
    k_vars, m_vars = [tf.Variable(k) for k in kernels], [tf.Variable(m) for m in masks]
    s_vars = [tf.Variable(0.5) for _ in kernels]
    before = [v.read_value() for v in k_vars + m_vars]
    added, nonzero, _ = OPS.tfprune_prune_smallest([v.handle for v in k_vars], [v.handle for v in m_vars],
                                                [v.handle for v in s_vars], targets, sparsity)
    return (added.numpy(), nonzero.numpy(), [v.numpy() for v in k_vars], [v.numpy() for v in m_vars],
            [v.numpy() for v in s_vars], [t.numpy() for t in before])


def _check_against_newly_pruned(kernels, masks, sparsities):
    targets = [pruned_count(k.size, s) for k, s in zip(kernels, sparsities)]
    added, nonzero, new_kernels, new_masks, sparsity_values, before = _prune(kernels, masks, targets)
    for i, (kernel, mask, sparsity) in enumerate(zip(kernels, masks, sparsities)):
        expected = newly_pruned(np.abs(kernel).ravel(), mask.ravel() != 0, sparsity)
        if expected is None:  # the mask prunes more than asked: untouched
            assert added[i] == -1 and sparsity_values[i] == 0.5
            np.testing.assert_array_equal(new_kernels[i], kernel)
            np.testing.assert_array_equal(new_masks[i], mask)
            continue
        indices, left = expected
        want_kernel, want_mask = kernel.ravel().copy(), mask.ravel().copy()
        want_kernel[indices], want_mask[indices] = 0, 0
        assert (added[i], nonzero[i]) == (len(indices), left)
        assert np.count_nonzero(new_kernels[i]) == left
        assert np.count_nonzero(new_masks[i] == 0) == targets[i]
        np.testing.assert_array_equal(new_kernels[i].ravel(), want_kernel)
        np.testing.assert_array_equal(new_masks[i].ravel(), want_mask)
        assert sparsity_values[i] == 0.25
    for read, original in zip(before, list(kernels) + list(masks)):  # copy on write: earlier reads unchanged
        np.testing.assert_array_equal(read, original)


@needs_op
@pytest.mark.parametrize("seed", _SEEDS)
def test_prunes_exactly_the_weights_newly_pruned_prunes(seed):
    rng = np.random.default_rng(seed)
    # 784x1000 is sampled for a bracket; 300x100 (< 32768 weights) makes every kept weight a candidate
    layers = [_layer(rng, (784, 1000), ties=seed % 2 == 0, kept_zeros=seed % 3 == 0),
              _layer(rng, (300, 100), ties=seed % 2 == 1, kept_zeros=True), _layer(rng, (7, 3))]
    _check_against_newly_pruned(*zip(*layers), [rng.random() * 0.95 for _ in layers])


@needs_op
def test_a_layer_already_pruned_further_is_left_alone_and_the_others_updated():
    rng = np.random.default_rng(7)
    (k1, m1), (k2, m2) = _layer(rng, (400, 300)), _layer(rng, (400, 300))
    pruned_now = [np.count_nonzero(m == 0) / m.size for m in (m1, m2)]
    _check_against_newly_pruned([k1, k2], [m1, m2], [pruned_now[0] - 0.1, pruned_now[1] + 0.1])


@needs_op
def test_exact_when_the_sample_misleads():
    # The bracket samples every 61st weight of a 1000x1000 kernel from target % 61: make exactly those
    # tiny, so its top sits far below the target-th smallest and the op must take every kept weight.
    rng = np.random.default_rng(8)
    kernel = rng.uniform(1.0, 2.0, (1000, 1000)).astype(np.float32)
    target = pruned_count(kernel.size, 0.5)
    kernel.ravel()[target % 61::61] = 1e-3
    _check_against_newly_pruned([kernel], [np.ones_like(kernel)], [0.5])


@needs_op
@pytest.mark.parametrize("subtract", [True, False])
def test_masked_update_adds_where_the_mask_keeps_and_writes_plus_zero_elsewhere(subtract):
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(37, 53)).astype(np.float32)  # not a multiple of 16: the tail loop too
    mask = (rng.random(kernel.shape) > 0.4).astype(np.float32)
    delta = rng.normal(size=kernel.shape).astype(np.float32)
    delta[np.unravel_index(np.flatnonzero(mask == 0)[:3], kernel.shape)] = [np.inf, -np.inf, np.nan]
    k_var, m_var = tf.Variable(kernel), tf.Variable(mask)
    before = k_var.read_value()  # a read taken before: copy-on-write leaves it as it was
    OPS.tfprune_masked_update(k_var.handle, m_var.handle, delta, subtract=subtract)
    result = k_var.numpy()
    np.testing.assert_array_equal(result, np.where(mask != 0, kernel - delta if subtract else kernel + delta, 0))
    assert not np.signbit(result[mask == 0]).any()
    np.testing.assert_array_equal(before.numpy(), kernel)
    np.testing.assert_array_equal(m_var.numpy(), mask)
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in shape"):
        OPS.tfprune_masked_update(k_var.handle, m_var.handle, delta[:, :5], subtract=subtract)


@needs_op
def test_portable_code_path_gives_the_same_weights():
    """Without AVX-512 the ops take their portable paths (a process-wide choice, hence a subprocess)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::test_prunes_exactly_the_weights_newly_pruned_prunes",
         f"{__file__}::test_exact_when_the_sample_misleads",
         f"{__file__}::test_masked_update_adds_where_the_mask_keeps_and_writes_plus_zero_elsewhere"],
        cwd=ROOT, env={**os.environ, "TFPRUNE_NO_AVX512": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{len(_SEEDS) + 3} passed") and "skipped" not in summary, summary


@needs_op
def test_rejects_a_mask_of_another_shape():
    with pytest.raises(tf.errors.InvalidArgumentError, match="differ in shape"):
        _prune([np.ones((4, 3), np.float32)], [np.ones((3, 4), np.float32)], [2])


def _wrapped_layers(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((300,)), PrunableDense(keras.layers.Dense(200)),
                             PrunableDense(keras.layers.Dense(10))]).layers


@needs_op
def test_pruning_step_gives_the_same_masks_with_and_without_the_op(monkeypatch):
    """Same weights, same schedule: identical masks, kernels and counts at every update, including a
    layer set by hand beyond the target (recomputed afresh on both paths)."""
    schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=50, frequency=10)
    fast_layers, slow_layers = _wrapped_layers(0), _wrapped_layers(0)
    fast, slow = PruningStep(fast_layers, schedule), PruningStep(slow_layers, schedule)
    rng = np.random.default_rng(0)
    for step in range(0, 60, 10):
        for a, b in zip(fast_layers, slow_layers):  # "training": new weights, pruned ones kept at zero
            new = np.round(rng.normal(size=a.kernel.shape), 2).astype(np.float32) * a.mask.numpy()
            a.kernel.assign(new)
            b.kernel.assign(new)
        if step == 30:  # the first layer pruned by hand beyond the schedule
            mask = (rng.random(fast_layers[0].kernel.shape) > 0.9).astype(np.float32)
            fast_layers[0].set_mask(mask)
            slow_layers[0].set_mask(mask)
        assert fast.update(step)
        with monkeypatch.context() as patch:
            patch.setattr(native, "ops", lambda: None)
            assert slow.update(step)
        for a, b in zip(fast_layers, slow_layers):
            np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
            np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())
            assert a.sparsity.numpy() == b.sparsity.numpy() == np.float32(schedule.sparsity_at(step))
        np.testing.assert_array_equal(fast.nonzero_counts(step), slow.nonzero_counts(step))
        np.testing.assert_array_equal(fast.nonzero_counts(step), [np.count_nonzero(layer.kernel.numpy())
                                                                  for layer in fast_layers])


def test_library_is_cached_by_tensorflow_version_and_source_hash(tmp_path, monkeypatch):
    """Another source (or TensorFlow) is another cache folder; nothing is written into the source tree."""
    monkeypatch.setenv("TFPRUNE_CACHE_DIR", str(tmp_path))
    first = native.library_path()
    assert first.parent.parent == tmp_path and first.parent.name.startswith(f"tf{tf.__version__}-")
    source = tmp_path / "edited.cc"
    source.write_bytes(native.SOURCE.read_bytes() + b"// edited\n")
    monkeypatch.setattr(native, "SOURCE", source)
    assert native.library_path() != first
    monkeypatch.setattr(tf, "__version__", "0.0.0")
    assert native.library_path().parent.name.startswith("tf0.0.0-")


def test_failed_build_or_unloadable_library_warns_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TFPRUNE_CACHE_DIR", str(tmp_path))
    source = tmp_path / "broken.cc"
    source.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", source)
    with pytest.raises(native.BuildError, match="g\\+\\+ failed with exit code"):
        native.build()
    assert not list(tmp_path.rglob("*.so*"))  # no half-written library left behind
    with pytest.warns(UserWarning, match="compiled ops are not available .*g\\+\\+ failed"):
        assert native._load() is None
    library = native.library_path()
    library.parent.mkdir(parents=True, exist_ok=True)
    library.write_bytes(b"not a library")
    with pytest.warns(UserWarning, match="cannot load"):
        assert native._load() is None
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    library.unlink()
    with pytest.warns(UserWarning, match="g\\+\\+ not found"):
        assert native._load() is None
    monkeypatch.setenv("TFPRUNE_NATIVE", "0")
    assert native._load() is None
