import numpy as np
import pytest
import tensorflow as tf

from tfprune import (
    GradualPruningCallback,
    PolynomialDecay,
    PrunableDense,
    prunable_layers,
    sparsity_report,
    strip_model,
)
from tfprune._keras import keras
from tfprune.criteria import Pattern
from tfprune.report import format_report

_DATA = np.random.default_rng(1)  # the module's fixed data; tests draw from their own rng
X = _DATA.standard_normal((256, 20)).astype(np.float32)
Y = _DATA.integers(0, 4, 256)


def small_model(pattern="unstructured"):
    inputs = keras.Input((20,))
    x = PrunableDense(keras.layers.Dense(32, activation="relu", name="a"), pattern)(inputs)
    x = PrunableDense(keras.layers.Dense(16, activation="relu", name="b"), pattern)(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="out")(x))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_all_ones_mask_matches_plain_dense_and_accepts_inputs_keyword(rng):
    dense = keras.layers.Dense(7, activation="gelu")
    dense.build((None, None, 5))
    wrapper = PrunableDense(dense)
    x = tf.constant(rng.standard_normal((2, 3, 5)).astype(np.float32))
    np.testing.assert_allclose(wrapper(inputs=x).numpy(), dense(x).numpy(), atol=1e-6)


def test_forward_reads_a_kernel_kept_equal_to_kernel_times_mask(rng):
    """The forward pass reads the kernel variable, which every write keeps equal to kernel * mask: set_mask
    zeros the pruned weights, optimizer steps keep them zero (kernel_mask), and the callback
    re-applies the masks when training starts, after a kernel written behind the mask's back."""
    wrapper = PrunableDense(keras.layers.Dense(3, use_bias=False))
    wrapper.build((None, 4))
    weights = wrapper.kernel.numpy()
    mask = np.array([[1, 0, 1]] * 4, np.float32)
    wrapper.set_mask(mask)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    # the same MatMul op on kernel * mask: bitwise (numpy's BLAS may sum in another order)
    np.testing.assert_array_equal(wrapper(x).numpy(), tf.matmul(x, weights * mask).numpy())

    model = small_model()
    layer = prunable_layers(model)[0]
    layer.prune_to(0.5)
    layer.kernel.assign(tf.ones_like(layer.kernel))  # a rewind, say: pruned positions hold weights again
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):  # runs after the pruning callback's hook
            seen.append(layer.kernel.numpy()[layer.mask.numpy() == 0])

    callback = GradualPruningCallback(PolynomialDecay(0.5, 0.5, 50, 100, 10))  # no mask update in this fit
    model.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=[callback, Probe()])
    assert len(seen) == 16 and all(len(pruned) == 320 and not pruned.any() for pruned in seen)


def test_gradient_passes_the_mask_straight_through(rng):
    """Pruned weights see the dense gradient (the constraint discards what it would do); kept ones see
    exactly what a Dense holding the masked kernel would give them."""
    wrapper = PrunableDense(keras.layers.Dense(3, use_bias=False))
    wrapper.build((None, 4))
    wrapper.set_mask(np.array([[1, 0, 1]] * 4, np.float32))
    plain = keras.layers.Dense(3, use_bias=False)
    plain.build((None, 4))
    plain.kernel.assign(wrapper.kernel)
    x = tf.constant(rng.standard_normal((5, 4)).astype(np.float32))
    grads = []
    for layer in (wrapper, plain):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x) - 1.0))
        grads.append(tape.gradient(loss, layer.kernel).numpy())
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-6)
    assert np.all(grads[0][:, 1] != 0)


@pytest.mark.parametrize("optimizer", [lambda: keras.optimizers.Adam(0.05), lambda: keras.optimizers.AdamW(0.05, weight_decay=0.01),
                                       lambda: keras.optimizers.legacy.Adam(0.05)])
def test_pruned_weights_stay_exactly_zero_through_adam_steps(optimizer):
    model = small_model()
    model.compile(optimizer(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, epochs=1, batch_size=32, verbose=0)  # build momentum first
    for layer in prunable_layers(model):
        layer.prune_to(0.6)
    model.fit(X, Y, epochs=3, batch_size=32, verbose=0)  # Adam's moments keep pushing pruned weights
    for layer in prunable_layers(model):
        kernel, mask = layer.kernel.numpy(), layer.mask.numpy()
        assert np.all(kernel[mask == 0] == 0.0)
        assert int((kernel == 0).sum()) == round(0.6 * kernel.size)


def test_get_config_round_trips_every_setting():
    for pattern in (Pattern("unstructured"), Pattern("block", block_size=8), Pattern("nm", n=1, m=4), Pattern("unit")):
        wrapper = PrunableDense(keras.layers.Dense(12, activation="relu", use_bias=False, name="inner"), pattern, name="w")
        clone = PrunableDense.from_config(wrapper.get_config())
        assert clone.pattern == pattern and clone.name == "w"
        assert clone.layer.get_config() == wrapper.layer.get_config()


def test_reapply_masks_for_optimizers_that_ignore_constraints():
    from tfprune import reapply_masks

    model = small_model()
    layer = prunable_layers(model)[0]
    layer.prune_to(0.5)
    pruned = layer.mask.numpy() == 0
    layer.kernel.assign(tf.ones_like(layer.kernel))  # as an optimizer without constraints could leave it
    reapply_masks(model)
    kernel = layer.kernel.numpy()
    assert (kernel[pruned] == 0).all() and (kernel[~pruned] == 1).all()


def test_rejects_non_dense():
    with pytest.raises(ValueError, match="PrunableDense wraps a tf_keras.layers.Dense, got .*Conv2D"):
        PrunableDense(keras.layers.Conv2D(3, 3))


def test_fit_with_callback_reaches_final_sparsity_on_kernels(tmp_path):
    model = small_model()
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=20, frequency=5)
    callback = GradualPruningCallback(schedule, log_dir=str(tmp_path / "tb"))
    model.fit(X, Y, epochs=4, batch_size=32, verbose=0, callbacks=[callback])  # 32 steps
    for layer in prunable_layers(model):
        assert int((layer.kernel.numpy() == 0).sum()) == round(0.75 * layer.kernel.shape.num_elements())
    assert [row["step"] for row in callback.history][:5] == [0, 5, 8, 10, 15]  # updates + epoch ends
    assert callback.history[-1]["nonzero_pct_all"] == pytest.approx(25.0, abs=0.1)
    tags = set()
    for path in (tmp_path / "tb").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    assert {"pruning/target_sparsity", "pruning/nonzero_pct/all", "pruning/nonzero_pct/a",
            "pruning/nonzero_pct/b"} <= tags


def test_strip_gives_plain_dense_with_same_outputs_and_zeros():
    model = small_model("unit")
    for layer in prunable_layers(model):
        layer.prune_to(0.5)
    before = model(X[:8]).numpy()
    stripped = strip_model(model)
    assert not any(isinstance(layer, PrunableDense) for layer in stripped.layers)
    np.testing.assert_allclose(stripped(X[:8]).numpy(), before, atol=1e-6)
    report = sparsity_report(stripped)
    assert [row["zeros"] for row in report["tensors"]] == [320, 256, 0]
    assert report["total"]["zeros"] == 576
    table = format_report(report).splitlines()
    assert table[2].split("|")[3].strip() == "320" and table[-1].startswith("| **total** | 1,216 weights | 576 |")


def test_strip_nested_and_sequential_models():
    inner = keras.Sequential([keras.Input((20,)), PrunableDense(keras.layers.Dense(8, name="inner_dense"))], name="inner")
    inputs = keras.Input((20,))
    outer = keras.Model(inputs, keras.layers.Dense(3)(inner(inputs)))
    prunable_layers(outer)[0].prune_to(0.5)
    before = outer(X[:4]).numpy()
    stripped = strip_model(outer)
    assert prunable_layers(stripped) == []
    np.testing.assert_allclose(stripped(X[:4]).numpy(), before, atol=1e-6)
    assert int((stripped.get_layer("inner").get_layer("inner_dense").kernel.numpy() == 0).sum()) == 80


def test_strip_subclassed_submodel_inside_a_functional_model():
    class Block(keras.Model):
        def __init__(self):
            super().__init__(name="block")
            self.proj = PrunableDense(keras.layers.Dense(8, name="proj"))

        def call(self, inputs):
            return self.proj(inputs)

    inputs = keras.Input((20,))
    outer = keras.Model(inputs, PrunableDense(keras.layers.Dense(3, name="head"))(Block()(inputs)))
    for layer in prunable_layers(outer):
        layer.prune_to(0.5)
    before = outer(X[:4]).numpy()
    stripped = strip_model(outer)
    assert prunable_layers(stripped) == []
    np.testing.assert_allclose(stripped(X[:4]).numpy(), before, atol=1e-6)
    assert int((stripped.get_layer("block").proj.kernel.numpy() == 0).sum()) == 80
    assert int((stripped.get_layer("head").kernel.numpy() == 0).sum()) == 12


def test_save_and_load_keep_masks_and_weights(tmp_path):
    model = small_model("block")
    for layer in prunable_layers(model):
        layer.prune_to(0.5)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    for a, b in zip(prunable_layers(model), prunable_layers(loaded)):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
        np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())
    np.testing.assert_allclose(loaded(X[:4]).numpy(), model(X[:4]).numpy(), atol=1e-6)


def test_checkpoint_resume_continues_at_same_step_with_same_masks(tmp_path):
    schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=40, frequency=4)
    tf.keras.utils.set_random_seed(0)
    model = small_model()
    model.fit(X, Y, epochs=1, batch_size=32, verbose=0, callbacks=[GradualPruningCallback(schedule)])  # steps 0..7
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    path = checkpoint.save(str(tmp_path / "ckpt"))

    resumed = small_model()
    resumed.optimizer.build(resumed.trainable_variables)
    tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).restore(path).assert_consumed()
    assert int(resumed.optimizer.iterations.numpy()) == 8
    for a, b in zip(prunable_layers(model), prunable_layers(resumed)):
        np.testing.assert_array_equal(a.mask.numpy(), b.mask.numpy())
        np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy())
    callback = GradualPruningCallback(schedule)
    resumed.fit(X, Y, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    assert callback.history[0]["step"] == 8  # continued, did not restart at 0
    assert callback.history[0]["target_sparsity"] == pytest.approx(schedule.sparsity_at(8))


def test_callback_follows_an_optimizer_that_does_not_step_once_a_batch():
    """The callback predicts the step from the epoch's first step and fit's batch index, and checks it at
    every step where the schedule acts. Here the optimizer steps twice a batch: the check catches it and
    the updates still land on the schedule's steps."""

    class TwoStepsABatch(keras.Model):
        def train_step(self, data):
            super().train_step(data)
            return super().train_step(data)

    inputs = keras.Input((20,))
    hidden = PrunableDense(keras.layers.Dense(32, activation="relu", name="a"))(inputs)
    model = TwoStepsABatch(inputs, keras.layers.Dense(4)(hidden))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = PolynomialDecay(0.0, 0.5, begin_step=4, end_step=24, frequency=4)
    callback = GradualPruningCallback(schedule)
    model.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=[callback])  # 32 optimizer steps
    updates = [row["step"] for row in callback.history if row["step"] % 4 == 0 and 4 <= row["step"] <= 24]
    assert updates == [4, 8, 12, 16, 20, 24] and int(model.optimizer.iterations.numpy()) == 32
    kernel = prunable_layers(model)[0].kernel.numpy()
    assert int((kernel == 0).sum()) == round(0.5 * kernel.size)


def test_custom_training_loop_with_pruning_step():
    from tfprune import PruningStep

    model = small_model()
    optimizer = keras.optimizers.Adam(1e-2)
    pruner = PruningStep(prunable_layers(model), PolynomialDecay(0.0, 0.5, 0, 6, 2))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for start in range(0, 256, 32):
        pruner.update(int(optimizer.iterations.numpy()))
        with tf.GradientTape() as tape:
            loss = loss_fn(Y[start:start + 32], model(X[start:start + 32], training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    for layer in prunable_layers(model):
        assert int((layer.kernel.numpy() == 0).sum()) == round(0.5 * layer.kernel.shape.num_elements())


def test_counts_taken_at_an_update_equal_the_kernels():
    from tfprune import PruningStep

    model = small_model()
    model.fit(X, Y, epochs=1, batch_size=32, verbose=0)
    layers = prunable_layers(model)
    layers[0].kernel.assign(tf.where(tf.abs(layers[0].kernel) > 0.3, layers[0].kernel, 0.0))  # zeros not in the mask
    pruner = PruningStep(layers, PolynomialDecay(0.0, 0.4, 0, 4, 2))
    for step in (0, 2, 4):
        pruner.update(step)
        np.testing.assert_array_equal(pruner.nonzero_counts(step), pruner.nonzero_counts())
        assert pruner.nonzero_counts()[1] == 16 * 32 - round(pruner.schedule.sparsity_at(step) * 16 * 32)


def test_global_ranking_through_the_callback_and_mixed_patterns_rejected():
    from tfprune import PruningStep

    model = small_model()
    pruner = PruningStep(prunable_layers(model), PolynomialDecay(0.0, 0.5, 0, 1, 1), global_ranking=True)
    pruner.update(1)
    zeros = sum(int((layer.kernel.numpy() == 0).sum()) for layer in prunable_layers(model))
    assert zeros == round(0.5 * (20 * 32 + 32 * 16))
    layers = prunable_layers(small_model()) + prunable_layers(small_model("unit"))
    with pytest.raises(ValueError, match="global ranking needs one pattern"):
        PruningStep(layers, PolynomialDecay(0.0, 0.5, 0, 1, 1), global_ranking=True)


def test_mirrored_strategy_two_replicas_identical_masks():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = small_model()
    callback = GradualPruningCallback(PolynomialDecay(0.0, 0.6, 0, 12, 3))
    model.fit(X, Y, epochs=2, batch_size=32, verbose=0, callbacks=[callback])
    for layer in prunable_layers(model):
        replicas = [v.numpy() for v in layer.mask.values]
        kernels = [v.numpy() for v in layer.kernel.values]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1])
        np.testing.assert_array_equal(kernels[0], kernels[1])
        assert int((kernels[1] == 0).sum()) == round(0.6 * kernels[1].size)
