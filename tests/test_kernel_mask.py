"""kernel_mask: masked increments give exactly the weights of an update followed by the mask constraint,
and the constraint's own assignment leaves the traced step only where it is provably redundant."""
import numpy as np
import pytest
import tensorflow as tf

from tfprune import PrunableDense, native, prunable_layers
from tfprune._keras import keras
from tfprune.kernel_mask import _METHODS

_DATA = np.random.default_rng(3)  # the module's fixed data; tests draw from their own rng
X = _DATA.standard_normal((96, 12)).astype(np.float32)
Y = _DATA.integers(0, 3, 96)
PATHS = ["compiled", "op not built"] if native.ops() is not None else ["op not built"]
needs_op = pytest.mark.skipif(native.ops() is None, reason="the op is not built here (setup.sh builds it)")

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(0.05),
    "adamw": lambda: keras.optimizers.AdamW(0.05, weight_decay=0.1),
    "sgd-nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "rmsprop-momentum": lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
    "adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "ftrl": lambda: keras.optimizers.Ftrl(0.1),  # writes with assign: the constraint stays
    "lion": lambda: keras.optimizers.Lion(0.01),
    "legacy-sgd": lambda: keras.optimizers.legacy.SGD(0.1, momentum=0.9),  # raw ops: the constraint stays
}


def _pruned_model(optimizer, constraint_only=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), PrunableDense(keras.layers.Dense(16, activation="relu")),
                              PrunableDense(keras.layers.Dense(3))])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, batch_size=32, verbose=0)  # moments built up before pruning
    for layer in prunable_layers(model):
        layer.prune_to(0.5)
        if constraint_only:  # what every kernel had before masked increments: the constraint alone
            for method in _METHODS:
                layer.kernel.__dict__.pop(method)
    return model


def _use_path(path, monkeypatch):
    if path == "op not built":
        monkeypatch.setattr(native, "ops", lambda: None)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_same_weights_as_the_constraint_alone(name, path, monkeypatch):
    _use_path(path, monkeypatch)
    fast, reference = _pruned_model(OPTIMIZERS[name]()), _pruned_model(OPTIMIZERS[name](), constraint_only=True)
    for model in (fast, reference):
        model.fit(X, Y, batch_size=32, epochs=2, verbose=0)
    for a, b in zip(prunable_layers(fast), prunable_layers(reference)):
        kernel, mask = a.kernel.numpy(), a.mask.numpy()
        np.testing.assert_array_equal(kernel, b.kernel.numpy())
        assert np.all(kernel[mask == 0] == 0) and int((mask == 0).sum()) == kernel.size // 2
        assert not np.array_equal(kernel, a.kernel.numpy() * 0)  # it trained


def _writers(graph, variable):
    """Types of the ops in `graph` that may write `variable` (every op taking its handle but a read)."""
    internal = next(inside for outside, inside in graph.captures if outside is variable.handle)
    return [op.type for op in graph.get_operations()
            if op.type not in ("ReadVariableOp", "VarIsInitializedOp", "VariableShape")
            and any(t.op is internal.op for t in op.inputs)]


@pytest.mark.parametrize("path", PATHS)
def test_the_constraint_assignment_leaves_the_step_after_a_masked_increment(path, monkeypatch):
    """Without the op the increment is plain (two plain ops would cost more than the constraint's pass)."""
    _use_path(path, monkeypatch)
    model = _pruned_model(keras.optimizers.Adam(0.05))
    graph = tf.function(model.train_step).get_concrete_function((X[:32], Y[:32])).graph
    expected = ["TfpruneMaskedUpdate"] if path == "compiled" else ["AssignSubVariableOp", "AssignVariableOp"]
    for layer in prunable_layers(model):
        assert _writers(graph, layer.kernel) == expected


def _pruned_wrapper(rng):
    wrapper = PrunableDense(keras.layers.Dense(4, use_bias=False))
    wrapper.build((None, 6))
    wrapper.kernel.assign(rng.integers(-8, 8, (6, 4)).astype(np.float32))  # sums below are exact
    wrapper.set_mask((rng.random((6, 4)) > 0.5).astype(np.float32))
    return wrapper.kernel, wrapper.mask.numpy() == 0  # the kernel's masked methods keep the mask alive


@pytest.mark.parametrize("path", PATHS)
def test_any_other_write_after_the_increment_keeps_the_constraint(path, monkeypatch, rng):
    _use_path(path, monkeypatch)
    kernel, pruned = _pruned_wrapper(rng)

    @tf.function
    def step():
        kernel.assign_sub(tf.ones_like(kernel))
        tf.raw_ops.AssignAddVariableOp(resource=kernel.handle, value=tf.ones_like(kernel))  # an unmasked write
        kernel.assign(kernel.constraint(kernel))

    before = kernel.numpy()
    step()
    after = kernel.numpy()
    assert np.all(after[pruned] == 0)
    np.testing.assert_array_equal(after[~pruned], before[~pruned])


@pytest.mark.parametrize("path", PATHS)
def test_a_constraint_output_taken_before_an_increment_is_assigned_as_it_was(path, monkeypatch, rng):
    _use_path(path, monkeypatch)
    kernel, pruned = _pruned_wrapper(rng)

    @tf.function
    def step():
        kernel.assign_add(tf.ones_like(kernel))
        taken = kernel.constraint(kernel)
        kernel.assign_add(tf.ones_like(kernel))
        kernel.assign(taken)

    before = kernel.numpy()
    step()
    np.testing.assert_array_equal(kernel.numpy(), np.where(pruned, 0, before + 1))


@pytest.mark.parametrize("where", ["compiled op", "xla"])
def test_masked_increments_write_exact_zeros_whatever_the_update(where, rng):
    if where == "compiled op" and native.ops() is None:
        pytest.skip("the op is not built here (setup.sh builds it)")
    kernel, pruned = _pruned_wrapper(rng)
    before = kernel.numpy()
    delta = np.where(pruned, np.float32(np.inf), np.float32(1.0)).astype(np.float32)

    @tf.function(jit_compile=where == "xla")  # the op has no XLA kernel: plain ops, fused, there
    def step():
        kernel.assign_add(delta, read_value=False)
        kernel.assign_sub(tf.fill(kernel.shape, 0.5))

    step()
    after = kernel.numpy()
    np.testing.assert_array_equal(after, np.where(pruned, 0, before + 0.5))
    assert not np.signbit(after[pruned]).any()


@needs_op
def test_increments_are_masked_eagerly_with_the_op(rng):
    kernel, pruned = _pruned_wrapper(rng)
    before = kernel.numpy()
    kernel.assign_sub(tf.fill(kernel.shape, 0.5))
    np.testing.assert_array_equal(kernel.numpy(), np.where(pruned, 0, before - 0.5))


def test_an_inner_constraint_is_kept_and_bake_gives_back_plain_writes(rng):
    wrapper = PrunableDense(keras.layers.Dense(4, use_bias=False, kernel_constraint=keras.constraints.NonNeg()))
    wrapper.build((None, 6))
    wrapper.set_mask((rng.random((6, 4)) > 0.5).astype(np.float32))
    pruned = wrapper.mask.numpy() == 0
    optimizer = keras.optimizers.SGD(1.0)
    x = tf.constant(rng.standard_normal((8, 6)).astype(np.float32))
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_sum(wrapper(x))
        optimizer.apply_gradients([(tape.gradient(loss, wrapper.kernel), wrapper.kernel)])
    kernel = wrapper.kernel.numpy()
    assert np.all(kernel >= 0) and np.all(kernel[pruned] == 0) and np.any(kernel[~pruned] > 0)
    dense = wrapper.bake()
    assert isinstance(dense.kernel.constraint, keras.constraints.NonNeg)
    assert not set(_METHODS) & set(vars(dense.kernel))
    dense.kernel.assign_add(tf.ones_like(dense.kernel))
    assert np.all(dense.kernel.numpy()[pruned] == 1)
