"""The FOR.ai pruning challenge on tfprune's primitives: train once, prune one-shot per k, evaluate.

Pruning goes through PrunableDense.prune_to, i.e. the same criteria the callback uses; the only thing that
differs between "weight" and "unit" pruning is the Pattern.
"""
from __future__ import annotations

import numpy as np

from tfprune._keras import keras
from tfprune.callbacks import GradualPruningCallback
from tfprune.layers import prunable_layers
from tfprune.models.mlp import build_mlp, network_kernels
from tfprune.regularizers import PruningFriendly
from tfprune.report import zero_fraction
from tfprune.schedules import PolynomialDecay

KS = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99)
METHODS = {"weight": "unstructured", "unit": "unit"}


def _compile(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def train_dense(x, y, epochs: int, batch_size: int, learning_rate: float, seed: int, dropout: float = 0.0,
                l1: float = 0.0, group: float = 0.0, callbacks=(), verbose=1) -> keras.Model:
    """Adam with a cosine-decayed learning rate. The L1 and group-lasso penalties on the hidden kernels are
    what let one-shot pruning remove most weights or units afterwards (docs/mnist_challenge.md measures it);
    dropout, off by default, is there to compare with (it is the identity at test time)."""
    keras.utils.set_random_seed(seed)
    regularizer = PruningFriendly(l1, group) if (l1 or group) else None
    model = build_mlp(seed=seed, dropout=dropout, regularizer=regularizer)
    steps = epochs * -(-len(x) // batch_size)
    _compile(model, keras.optimizers.schedules.CosineDecay(learning_rate, steps))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose, callbacks=list(callbacks), shuffle=True)
    return model


def prunable_copy(dense: keras.Model, pattern: str) -> keras.Model:
    """The trained network with its four hidden kernels in PrunableDense (all-ones masks), same weights."""
    model = build_mlp(prunable=True, pattern=pattern)
    for source, target in zip(network_kernels(dense), network_kernels(model)):
        target.assign(source)
    return model


def one_shot(dense: keras.Model, method: str, k: int) -> keras.Model:
    model = prunable_copy(dense, METHODS[method])
    for layer in prunable_layers(model):
        layer.prune_to(k / 100.0)
    return model


def accuracy(model: keras.Model, x, y, batch_size: int = 1000) -> float:
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def measured_sparsity(model: keras.Model) -> tuple[float, float]:
    """(fraction of zeros over the four prunable kernels, over all five kernels: the whole network, which
    has no biases). Read from the kernels, not the masks."""
    kernels = [k.numpy() for k in network_kernels(model)]
    return zero_fraction(kernels[:-1]), zero_fraction(kernels)


def fine_tune(dense: keras.Model, method: str, k: int, x, y, epochs: int, batch_size: int, learning_rate: float,
              log_dir: str | None = None) -> keras.Model:
    """Recovery: gradual pruning (Zhu & Gupta, to k over the first two thirds) while training on."""
    model = _compile(prunable_copy(dense, METHODS[method]), learning_rate)
    steps = epochs * -(-len(x) // batch_size)
    end = max(1, (2 * steps) // 3)
    schedule = PolynomialDecay(0.0, k / 100.0, begin_step=0, end_step=end, frequency=max(1, end // 10))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0,
              callbacks=[GradualPruningCallback(schedule, log_dir=log_dir)])
    return model
