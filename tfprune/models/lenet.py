"""LeNet-5 (LeCun et al. 1998) for 28 x 28 grey images, as the ADMM paper prunes it: two 5 x 5 convolutions
(6 and 16 filters, the first padded to keep 28 x 28), each followed by 2 x 2 max pooling, then dense layers of
120, 84 and 10 units; ReLU. 61,470 weights in its five kernels (61,706 parameters with the biases)."""
from __future__ import annotations

import numpy as np

from tfprune._keras import keras

WEIGHT_LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def build_lenet5(seed: int | None = None, filters=(6, 16), units=(120, 84), classes: int = 10) -> keras.Model:
    """LeNet-5 taking (N, 784) or (N, 28, 28, 1) images. `filters` and `units` set the widths (a compacted
    model is the same network narrower)."""
    def init(i):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + i)

    image = keras.Input((784,), name="image")
    x = keras.layers.Reshape((28, 28, 1), name="to_grid")(image)
    x = keras.layers.Conv2D(filters[0], 5, padding="same", activation="relu", kernel_initializer=init(0),
                            name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(filters[1], 5, activation="relu", kernel_initializer=init(1), name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(units[0], activation="relu", kernel_initializer=init(2), name="fc1")(x)
    x = keras.layers.Dense(units[1], activation="relu", kernel_initializer=init(3), name="fc2")(x)
    logits = keras.layers.Dense(classes, kernel_initializer=init(4), name="fc3")(x)
    return keras.Model(image, logits, name="lenet5")


def _input_rows(kernel: np.ndarray, channels: int) -> np.ndarray:
    """The kernel as (…, channel, units) with the channel axis second to last: a conv kernel as it is, a
    Dense kernel after a Flatten of (h, w, c) reshaped to (h * w, c, units)."""
    if kernel.ndim == 4:
        return kernel
    return kernel.reshape(kernel.shape[0] // channels, channels, kernel.shape[1])


def compact_lenet(model) -> tuple:
    """(the narrower LeNet-5 without dead filters and units, its widths). A filter or unit is dead when its
    kernel column and bias are zero (ReLU and max pooling keep it at 0) or when nothing downstream reads it;
    removing it, with the next layer's input channel, leaves the logits unchanged (up to summation order).
    `model`: a plain LeNet-5 (`build_lenet5`, stripped after pruning)."""
    layers = [model.get_layer(name) for name in WEIGHT_LAYERS]
    kernels = [layer.kernel.numpy() for layer in layers]
    biases = [layer.bias.numpy() for layer in layers]
    widths = []
    for i in range(len(layers) - 1):
        units = kernels[i].shape[-1]
        column = np.any(kernels[i].reshape(-1, units) != 0, axis=0) | (biases[i] != 0)
        following = _input_rows(kernels[i + 1], units)
        read = np.any(np.moveaxis(following, -2, 0).reshape(units, -1) != 0, axis=1)
        alive = np.flatnonzero(column & read)
        if alive.size == 0:
            alive = np.array([0])
        kernels[i], biases[i] = kernels[i][..., alive], biases[i][alive]
        narrowed = following[..., alive, :]
        kernels[i + 1] = narrowed if kernels[i + 1].ndim == 4 else narrowed.reshape(-1, narrowed.shape[-1])
        widths.append(int(alive.size))
    compact = build_lenet5(filters=tuple(widths[:2]), units=tuple(widths[2:]), classes=kernels[-1].shape[-1])
    for name, kernel, bias in zip(WEIGHT_LAYERS, kernels, biases):
        compact.get_layer(name).set_weights([kernel, bias])
    return compact, widths
