"""Non-finite weights: the criteria rank them last (exact counts), the compiled op never crashes on them,
and a run whose weights diverge stops at the next mask update with the layer and the step named."""
import numpy as np
import pytest
import tensorflow as tf

from tfprune import GradualPruningCallback, Pattern, PolynomialDecay, PrunableDense, PruningStep, compute_mask, native
from tfprune._keras import keras
from tfprune.criteria import newly_pruned
from tfprune.errors import NonFiniteWeightsError, TfpruneError

POISONS = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


@pytest.mark.parametrize("poison", sorted(POISONS))
@pytest.mark.parametrize("pattern", ["unstructured", "unit", "row", "block", "nm"])
@pytest.mark.parametrize("shape", [(16, 8), (800, 400)])  # small, and large enough for the sampled bracket
def test_criteria_rank_non_finite_last_with_exact_counts(poison, pattern, shape, rng):
    kernel = rng.standard_normal(shape).astype(np.float32)
    bad = rng.random(shape) < 0.5  # half the weights poisoned, as a diverging run leaves them
    kernel[bad] = POISONS[poison]
    mask = compute_mask(kernel, 0.5, Pattern(pattern, block_size=2))
    finite = np.isfinite(kernel)
    if pattern == "unstructured":
        assert (~mask).sum() == kernel.size // 2
        assert mask[~finite].all() or (~mask[finite]).all()  # finite weights go first
        if (mask & finite).any():
            assert np.abs(kernel[~mask]).max() <= np.abs(kernel[mask & finite]).min()
    elif pattern == "nm":
        assert (~mask).sum() == kernel.size // 2 and (~mask).reshape(shape[0] // 4, 4, -1).sum(axis=1).max() <= 2
    else:
        assert (~mask).sum() == pytest.approx(kernel.size // 2, abs=max(shape))


def test_newly_pruned_counts_nan_as_the_largest(rng):
    magnitudes = np.abs(rng.standard_normal(128)).astype(np.float32)
    magnitudes[::2] = np.inf  # criteria.magnitudes maps NaN to inf before this
    indices, nonzero = newly_pruned(magnitudes, np.ones(128, bool), 0.5)
    assert len(indices) == 64 and np.isfinite(magnitudes[indices]).all() and nonzero == 64


def _dense(kernel):
    wrapper = PrunableDense(keras.layers.Dense(kernel.shape[1], use_bias=False))
    wrapper.build((None, kernel.shape[0]))
    wrapper.kernel.assign(kernel)
    return wrapper


@pytest.mark.parametrize("use_op", [True, False], ids=["compiled", "numpy"])
def test_pruning_step_stops_on_non_finite_weights(use_op, rng, monkeypatch):
    if use_op and native.ops() is None:
        pytest.skip("the compiled ops are not built here")
    if not use_op:
        monkeypatch.setattr(native, "ops", lambda: None)
    kernel = rng.standard_normal((128, 64)).astype(np.float32)
    kernel[3, 5] = np.nan
    wrapper = _dense(kernel)
    step = PruningStep([wrapper], PolynomialDecay(0.0, 0.7, 0, 100, 10))
    with pytest.raises(NonFiniteWeightsError, match=r"non-finite weights \(NaN or inf\) in .* at step 20"):
        step.update(20)
    assert isinstance(NonFiniteWeightsError("x"), TfpruneError)
    assert (wrapper.mask.numpy() == 1).all()  # nothing was changed


@pytest.mark.native
@pytest.mark.parametrize("poison", sorted(POISONS))
def test_compiled_op_counts_non_finite_weights_and_touches_nothing(poison, rng):
    ops = native.ops()
    if ops is None:
        pytest.skip("the compiled ops are not built here")
    for size in (100, 300_000):  # no sampled bracket, and a sampled one
        clean = rng.standard_normal(size).astype(np.float32)
        kernel = clean.copy()
        kernel[: size // 2 + 10] = POISONS[poison]  # fewer comparable weights than the target prunes
        variables = [tf.Variable(v) for v in (clean, kernel)]
        masks = [tf.Variable(np.ones(size, np.float32)) for _ in variables]
        added, _, nonfinite = ops.tfprune_prune_smallest([v.handle for v in variables], [m.handle for m in masks],
                                                         [tf.Variable(0.0).handle for _ in variables],
                                                         [size // 2] * 2, 0.5)
        assert nonfinite.numpy().tolist() == [0, size // 2 + 10] and added.numpy().tolist() == [-1, -1]
        assert all((m.numpy() == 1).all() for m in masks)  # no layer touched, the clean one neither
        np.testing.assert_array_equal(variables[0].numpy(), clean)


def test_a_diverging_fit_stops_with_one_message(rng):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, PrunableDense(keras.layers.Dense(4))(inputs))
    model.compile(keras.optimizers.SGD(float("nan")), "mse")
    x, y = rng.standard_normal((64, 8)).astype(np.float32), rng.standard_normal((64, 4)).astype(np.float32)
    with pytest.raises(NonFiniteWeightsError, match="at step 2"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=[GradualPruningCallback(PolynomialDecay(0.0, 0.5, 0, 6, 2))])
