"""PrunableDense: a tf-keras Dense wrapper that owns a pruning mask.

The kernel variable itself is kept equal to kernel * mask, so the forward pass is the Dense's own and
costs nothing extra. Every write the package makes keeps it so: optimizer steps through `kernel_mask`
(a constraint after each step, masked increments that make it free), installing a mask zeros the weights
it prunes, and the pruning callback re-applies the masks when training starts, after any writes of the
user's own. Checkpoints therefore hold kernels exactly as sparse as their masks, whatever Adam's moments say.

Multiplying by the mask in the forward pass as well (tfmot's way) would be a second pass over every
kernel at every step, for no change in the result: 4.6 % of the FOR.ai MLP's training time here. The
gradient is the dense one, as tfmot's straight-through gradient; the masked update discards what it does
to pruned weights. (Masking the gradient instead left Adam's moments of pruned weights decaying into
denormal floats, which halved the MLP's training speed on this CPU.)
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfprune import kernel_mask
from tfprune.criteria import Pattern, keep_mask


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableDense(keras.layers.Wrapper):
    """Wraps a `Dense` layer (built or not) and prunes its kernel with `pattern`.

    The mask is a non-trainable variable, written in cross-replica context so every replica holds the same
    one. It changes only through `set_mask` / `prune_to`, or `PruningStep` (which the
    `GradualPruningCallback` drives on its schedule).
    """

    def __init__(self, layer, pattern: Pattern | dict | str = "unstructured", **kwargs):
        if not isinstance(layer, keras.layers.Dense):
            raise ValueError(
                f"PrunableDense wraps a tf_keras.layers.Dense, got {type(layer).__module__}.{type(layer).__name__}"
            )
        kwargs.setdefault("name", f"prunable_{layer.name}")
        super().__init__(layer, **kwargs)
        if isinstance(pattern, dict):
            pattern = Pattern.from_dict(pattern)
        self.pattern = Pattern(pattern) if isinstance(pattern, str) else pattern
        self.mask = None
        self.sparsity = None
        if layer.built:
            self._create_mask()

    def build(self, input_shape=None):
        if not self.layer.built:
            with tf.name_scope(self.layer.name):
                self.layer.build(input_shape)
        if self.mask is None:
            self._create_mask()
        super().build(input_shape)

    def _create_mask(self):
        kernel = self.layer.kernel
        self.mask = self.add_weight(
            name="mask", shape=kernel.shape, dtype=kernel.dtype, initializer="ones", trainable=False,
            aggregation=tf.VariableAggregation.MEAN, synchronization=tf.VariableSynchronization.ON_WRITE,
        )
        self.sparsity = self.add_weight(
            name="target_sparsity", shape=(), dtype=tf.float32, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.MEAN,
        )
        kernel_mask.install(kernel, self.mask)

    # HF's layers call sublayers as `self.dense(inputs=hidden_states)`: keep the argument named `inputs`.
    def call(self, inputs, training=None):
        return self.layer.call(inputs)  # the kernel already is kernel * mask (module docstring)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    @property
    def kernel(self) -> tf.Variable:
        return self.layer.kernel

    def set_mask(self, mask, sparsity: float | None = None) -> None:
        """Install a 0/1 mask and zero the pruned weights now (not only after the next optimizer step)."""
        mask = np.asarray(mask)
        if mask.shape != tuple(self.mask.shape):
            raise ValueError(f"mask shape {mask.shape} does not match kernel shape {tuple(self.mask.shape)} of {self.name}")
        self._install_mask(tf.constant(mask), float(self.sparsity.numpy() if sparsity is None else sparsity))

    def _install_mask(self, mask, sparsity):
        """Mask (bool or 0/1) into the mask variable, pruned weights zeroed at once. PruningStep runs it
        for all layers inside one tf.function."""
        mask = tf.cast(mask, self.mask.dtype)
        self.mask.assign(mask)
        self.kernel.assign(self.kernel * mask)
        self.sparsity.assign(sparsity)

    def prune_to(self, sparsity: float) -> None:
        """Layer-wise mask at `sparsity` with this layer's pattern."""
        self.set_mask(keep_mask(self.kernel.numpy(), sparsity, self.pattern), sparsity)

    def apply_mask(self) -> None:
        """kernel *= mask: restores kernel == kernel * mask after writes that bypass it (your own assign or
        set_weights on the kernel, an optimizer that ignores constraints)."""
        self.kernel.assign(self.kernel * tf.cast(self.mask, self.kernel.dtype))

    def bake(self) -> keras.layers.Dense:
        """Write kernel * mask into the Dense, give it back its own constraint, and return it (unwrapped)."""
        self.apply_mask()
        kernel_mask.uninstall(self.kernel)
        return self.layer

    def get_config(self):
        return {**super().get_config(), "pattern": self.pattern.to_dict()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


def prunable_layers(model: tf.Module) -> list[PrunableDense]:
    """Every PrunableDense anywhere under `model`, also inside plain Layers such as HF's TFBertMainLayer
    (tfmot only looks inside keras.Model instances and misses them). Order is stable: attribute order."""
    found = [m for m in getattr(model, "submodules", ()) if isinstance(m, PrunableDense)]
    if isinstance(model, PrunableDense):
        found.insert(0, model)
    seen, unique = set(), []
    for layer in found:
        if id(layer) not in seen:
            seen.add(id(layer))
            unique.append(layer)
    return unique


def reapply_masks(model: tf.Module | list[PrunableDense]) -> None:
    """kernel *= mask for every wrapper in `model` (or in a list of wrappers): after writing kernels
    yourself, or after each step with an optimizer that ignores variable constraints."""
    for layer in model if isinstance(model, list) else prunable_layers(model):
        layer.apply_mask()
