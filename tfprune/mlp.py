"""The FOR.ai pruning-challenge network: ReLU MLP 784-1000-1000-500-200, 10 logits, no biases."""
from __future__ import annotations

import tf_keras as keras

from tfprune.criteria import Pattern
from tfprune.layers import PrunableDense

HIDDEN_UNITS = (1000, 1000, 500, 200)


def build_mlp(prunable: bool = False, pattern: Pattern | str = "unstructured", inputs: int = 784,
              classes: int = 10, hidden=HIDDEN_UNITS, seed: int | None = None) -> keras.Model:
    """The hidden kernels are wrapped in PrunableDense when `prunable`; the logits kernel never is."""
    init = keras.initializers.GlorotUniform(seed=seed)
    x = image = keras.Input((inputs,), name="image")
    for i, units in enumerate(hidden):
        dense = keras.layers.Dense(units, activation="relu", use_bias=False, kernel_initializer=init, name=f"hidden{i + 1}")
        x = (PrunableDense(dense, pattern, name=f"prunable_hidden{i + 1}") if prunable else dense)(x)
        init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + i + 1)
    logits = keras.layers.Dense(classes, use_bias=False, kernel_initializer=init, name="logits")(x)
    return keras.Model(image, logits, name="forai_mlp")


def hidden_kernels(model: keras.Model) -> list:
    """The four prunable kernels of `build_mlp`, wrapped or not, in order."""
    return [model.get_layer(f"hidden{i + 1}").kernel if _has(model, f"hidden{i + 1}")
            else model.get_layer(f"prunable_hidden{i + 1}").kernel for i in range(len(HIDDEN_UNITS))]


def _has(model, name) -> bool:
    return any(layer.name == name for layer in model.layers)
