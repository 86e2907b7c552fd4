"""Contracts every registered layer type, pattern and schedule must keep: exact counts, the structure
respected, at least one unit kept, zeros that stay zero through optimizer steps, config round trips."""
import numpy as np
import pytest
import tensorflow as tf

from tfprune import (
    GradualPruningCallback,
    Pattern,
    PolynomialDecay,
    PrunableLayer,
    PruningStep,
    TfpruneError,
    compute_global_masks,
    compute_mask,
    prunable_layers,
    prune,
    registry,
    schedules,
    strip_model,
)
from tfprune._keras import keras
from tfprune.structure import pruned_units

# (layer factory, input shape without batch): one of every registered type, with 2-D views of
# rows x units whose rows divide by 4 (N:M) and are not multiples of the block size everywhere.
LAYERS = {
    "Dense": (lambda: keras.layers.Dense(12), (16,)),
    "EinsumDense": (lambda: keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 3, 4), bias_axes="de"), (5, 8)),
    "Conv1D": (lambda: keras.layers.Conv1D(6, 3, padding="same"), (10, 4)),
    "Conv2D": (lambda: keras.layers.Conv2D(8, 3, padding="same"), (9, 9, 4)),
    "Conv3D": (lambda: keras.layers.Conv3D(4, 2), (5, 5, 5, 2)),
    "DepthwiseConv2D": (lambda: keras.layers.DepthwiseConv2D(2, depth_multiplier=2), (7, 7, 6)),
    "Conv2DTranspose": (lambda: keras.layers.Conv2DTranspose(5, 2), (6, 6, 4)),
}
PATTERNS = [Pattern("unstructured"), Pattern("unit"), Pattern("row"), Pattern("block", block_size=2),
            Pattern("nm", n=2, m=4)]
SPARSITY = 0.5


def test_every_registered_type_is_covered():
    assert {t.__name__ for t in registry.registered_types()} == set(LAYERS)


def _model(name, pattern, rng):
    make, shape = LAYERS[name]
    inputs = keras.Input(shape)
    wrapper = PrunableLayer(make(), pattern)
    model = keras.Model(inputs, keras.layers.Flatten()(wrapper(inputs)))
    wrapper.kernel.assign(rng.standard_normal(wrapper.kernel.shape).astype(np.float32))
    return model, wrapper, rng.standard_normal((8, *shape)).astype(np.float32)


def _expected_zeros(pattern, view):
    rows, units = view.shape_2d
    if pattern.name == "unit":
        return pruned_units(units, SPARSITY) * rows
    if pattern.name == "row":
        return pruned_units(rows, SPARSITY) * units
    return round(SPARSITY * rows * units)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_exact_count_structure_and_zeros_through_adam(name, pattern, rng):
    model, wrapper, x = _model(name, pattern, rng)
    view = wrapper.view
    wrapper.prune_to(SPARSITY)
    kernel_2d = view.to_2d(wrapper.kernel.numpy())
    zero = kernel_2d == 0
    if pattern.name == "block" and (view.shape_2d[0] % 2 or view.shape_2d[1] % 2):
        assert abs(int(zero.sum()) - round(SPARSITY * kernel_2d.size)) <= max(view.shape_2d)  # edge blocks
    else:
        assert int(zero.sum()) == _expected_zeros(pattern, view)
    assert (view.to_2d(wrapper.mask.numpy()) == 0).sum() == zero.sum()  # the mask is what the kernel says
    if pattern.name == "unit":
        assert set(zero.all(axis=0)) | set(~zero.any(axis=0)) == {True, False}  # whole columns
        assert zero.all(axis=0).sum() == pruned_units(view.shape_2d[1], SPARSITY)
    if pattern.name == "row":
        assert zero.all(axis=1).sum() == pruned_units(view.shape_2d[0], SPARSITY)
    if pattern.name == "nm":
        windows = zero.reshape(view.shape_2d[0] // 4, 4, -1).sum(axis=1)
        assert windows.max() <= 2
    assert (~zero).any(axis=0).sum() >= 1  # at least one unit kept
    before = model(x).numpy()
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(x, rng.standard_normal(before.shape).astype(np.float32), epochs=3, verbose=0)
    kernel_2d = view.to_2d(wrapper.kernel.numpy())
    assert (kernel_2d[zero] == 0).all()  # pruned weights are exactly zero after Adam steps
    assert (kernel_2d[~zero] != view.to_2d(model.get_weights()[0])[~zero]).sum() == 0
    after = model(x).numpy()
    stripped = strip_model(model)
    assert not prunable_layers(stripped)
    np.testing.assert_allclose(stripped(x).numpy(), after, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip_and_saved_masks(name, rng, tmp_path):
    model, wrapper, x = _model(name, Pattern("unit"), rng)
    wrapper.prune_to(0.5)
    expected = model(x).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    (reloaded,) = prunable_layers(loaded)
    assert type(reloaded.layer) is type(wrapper.layer) and reloaded.pattern == Pattern("unit")
    np.testing.assert_array_equal(reloaded.mask.numpy(), wrapper.mask.numpy())
    np.testing.assert_allclose(loaded(x).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_callback_prunes_every_type_with_the_compiled_and_the_numpy_path(name, rng, monkeypatch):
    """Unstructured gradual pruning of any registered weight: the compiled op (or the numpy path) counts
    flat, whatever the weight's rank, and reaches the exact count with zeros where the mask says.
    (Identical masks from identical kernels on both paths: test_native.)"""
    from tfprune import native

    for use_op in (True, False):
        model, wrapper, x = _model(name, Pattern("unstructured"), np.random.default_rng(0))
        with monkeypatch.context() as patch:
            if not use_op:
                patch.setattr(native, "ops", lambda: None)
            model.compile(keras.optimizers.Adam(0.01), "mse")
            y = np.zeros((len(x), model.output_shape[-1]), np.float32)
            model.fit(x, y, batch_size=2, epochs=2, verbose=0,
                      callbacks=[GradualPruningCallback(PolynomialDecay(0.0, 0.75, 0, 6, 2))])
        kernel, mask = wrapper.kernel.numpy(), wrapper.mask.numpy()
        assert int((kernel == 0).sum()) == int((mask == 0).sum()) == round(0.75 * kernel.size)
        assert (kernel[mask == 0] == 0).all()


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p.name != "nm"], ids=lambda p: p.name)
def test_criteria_keep_a_group_and_global_ranking_counts(pattern, rng):
    kernels = [rng.standard_normal((16, 8)).astype(np.float32), 0.01 * rng.standard_normal((8, 4)).astype(np.float32)]
    for sparsity in (0.0, 0.3, 0.9, 0.99):
        masks = [compute_mask(k, sparsity, pattern) for k in kernels]
        assert all(m.dtype == bool and m.any() for m in masks)
        together = compute_global_masks(kernels, sparsity, pattern)
        assert all(m.any() for m in together)
        if pattern.name == "unstructured":  # every small weight ranks below every large one: the small
            total = sum(k.size for k in kernels)  # kernel, once emptied by the ranking, keeps its best weight
            ranked = min(round(sparsity * total), total - 1)
            assert sum(int((~m).sum()) for m in together) == ranked - (ranked >= kernels[1].size)


ALL_SCHEDULES = [schedules.PolynomialDecay(0.1, 0.8, 10, 110, 20), schedules.ConstantSparsity(0.6, 5, 50, 15),
                 schedules.OneShot(0.7, 12)]


def test_every_registered_schedule_is_covered():
    assert {type(s) for s in ALL_SCHEDULES} == set(schedules.SCHEDULES.values())


@pytest.mark.parametrize("schedule", ALL_SCHEDULES, ids=lambda s: s.kind)
def test_schedule_contract(schedule):
    steps = range(0, 200)
    values = [schedule.sparsity_at(s) for s in steps]
    assert all(0.0 <= v < 1.0 for v in values)
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))  # never revives weights
    assert schedules.from_json(schedules.to_json(schedule)) == schedule
    updates = schedules.update_steps(schedule, 199)
    assert updates and all(schedule.should_update(s) for s in updates)
    expected = {"polynomial_decay": [10, 30, 50, 70, 90, 110], "constant": [5, 20, 35, 50], "one_shot": [12]}
    assert updates == expected[schedule.kind]
    final = {"polynomial_decay": 0.8, "constant": 0.6, "one_shot": 0.7}[schedule.kind]
    assert values[-1] == pytest.approx(final)


def test_prune_wraps_layers_in_place_everywhere(rng):
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)
            self.blocks = [keras.layers.Dense(5), keras.layers.Dense(3)]

        def call(self, x):
            x = keras.layers.Flatten()(self.conv(x))
            for block in self.blocks:
                x = block(x)
            return x

    sub = Sub()
    x = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
    expected = sub(x).numpy()
    wrappers = prune(sub, "unstructured", include=r"^(conv|blocks/1)$")
    assert [w.label for w in wrappers] == ["conv", "blocks/1"]
    assert isinstance(sub.conv, PrunableLayer) and isinstance(sub.blocks[1], PrunableLayer)
    assert not isinstance(sub.blocks[0], PrunableLayer)
    np.testing.assert_array_equal(sub(x).numpy(), expected)  # all-ones masks
    assert prune(sub, include="blocks") == [sub.blocks[0]]  # wrapped ones are left alone
    with pytest.raises(TfpruneError, match="no unwrapped layer"):
        prune(sub, include="nothing here")
    with pytest.raises(TfpruneError, match="not a valid regular expression"):
        prune(sub, include="(")
    with pytest.raises(TfpruneError, match="registered type"):
        PrunableLayer(keras.layers.LayerNormalization())

    inputs = keras.Input((8,))
    functional = keras.Model(inputs, keras.layers.Dense(2, name="b")(keras.layers.Dense(4, name="a")(inputs)))
    (wrapper,) = prune(functional, include="^a$")
    assert functional.layers[1] is wrapper and wrapper.label == "a"
    wrapper.prune_to(0.5)
    values = rng.standard_normal((3, 8)).astype(np.float32)
    clone = keras.Model.from_config(functional.get_config())
    clone.set_weights(functional.get_weights())
    assert isinstance(clone.layers[1], PrunableLayer)
    np.testing.assert_array_equal(clone(values).numpy(), functional(values).numpy())


def test_pruning_step_rejects_what_it_cannot_honour():
    a, b = (PrunableLayer(keras.layers.Dense(4), p) for p in ("unstructured", "unit"))
    for layer in (a, b):
        layer.build((None, 8))
    schedule = PolynomialDecay(0.0, 0.5, 0, 10, 5)
    with pytest.raises(TfpruneError, match="nothing to prune"):
        PruningStep([], schedule)
    with pytest.raises(TfpruneError, match="one pattern for all layers"):
        PruningStep([a, b], schedule, global_ranking=True)
    nm = PrunableLayer(keras.layers.Dense(4), "nm")
    nm.build((None, 8))
    with pytest.raises(TfpruneError, match="nm pattern"):
        PruningStep([nm], schedule, global_ranking=True)
    assert tf.reduce_all(a.mask == 1)


def test_prunable_dense_saved_config_format_is_stable():
    """Models saved by earlier releases hold exactly this config under this registered name; it must keep
    loading (checked once by hand against a model saved by tfprune 0.1.0, .keras and .h5)."""
    from tfprune import PrunableDense

    wrapper = PrunableDense(keras.layers.Dense(3, name="d"), Pattern("block", block_size=2), name="w")
    config = keras.layers.serialize(wrapper)
    assert (config["registered_name"], config["class_name"], config["module"]) == (
        "tfprune>PrunableDense", "PrunableDense", "tfprune.layers")
    assert set(config["config"]) == {"name", "trainable", "dtype", "layer", "pattern"}
    assert config["config"]["pattern"] == {"name": "block", "block_size": 2, "n": 2, "m": 4}
    clone = keras.layers.deserialize(config)
    assert type(clone) is PrunableDense and clone.pattern == wrapper.pattern and not clone._mask_bias
