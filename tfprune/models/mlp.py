"""The FOR.ai pruning-challenge network: ReLU MLP 784-1000-1000-500-200, 10 logits, no biases."""
from __future__ import annotations

from tfprune._keras import keras
from tfprune.criteria import Pattern
from tfprune.layers import PrunableDense

HIDDEN_UNITS = (1000, 1000, 500, 200)


def build_mlp(prunable: bool = False, pattern: Pattern | str = "unstructured", inputs: int = 784,
              classes: int = 10, hidden=HIDDEN_UNITS, seed: int | None = None, dropout: float = 0.0,
              regularizer=None) -> keras.Model:
    """The hidden kernels are wrapped in PrunableDense when `prunable`; the logits kernel never is.
    `dropout` adds Dropout after each hidden layer (training only; it has no weights); `regularizer`
    applies to the hidden kernels."""
    init = keras.initializers.GlorotUniform(seed=seed)
    x = image = keras.Input((inputs,), name="image")
    for i, units in enumerate(hidden):
        dense = keras.layers.Dense(units, activation="relu", use_bias=False, kernel_initializer=init,
                                   kernel_regularizer=regularizer, name=f"hidden{i + 1}")
        x = (PrunableDense(dense, pattern, name=f"prunable_hidden{i + 1}") if prunable else dense)(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
        init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + i + 1)
    logits = keras.layers.Dense(classes, use_bias=False, kernel_initializer=init, name="logits")(x)
    return keras.Model(image, logits, name="forai_mlp")


def network_kernels(model: keras.Model) -> list:
    """The five kernels of `build_mlp` (four hidden, then logits), wrapped or not."""
    names = {layer.name: layer for layer in model.layers}
    hidden = [names.get(f"hidden{i + 1}") or names[f"prunable_hidden{i + 1}"] for i in range(len(HIDDEN_UNITS))]
    return [layer.kernel for layer in hidden] + [names["logits"].kernel]
