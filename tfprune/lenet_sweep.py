"""LeNet-5 pruning runs: one-shot, gradual and ADMM, irregular and filter, nested levels; each run starts from
the same trained dense model and gets the same number of epochs.

- one-shot: the target mask at the first step, then masked retraining for every epoch;
- gradual: Zhu & Gupta's schedule from 0 to the target over the first two thirds of the epochs;
- ADMM: `admm_fraction` of the epochs with the ADMM penalty (`tfprune.admm`; filter runs project whole
  coupled units), a hard prune, then masked retraining for the rest.
Every run trains on the labels by cross-entropy, or with `loss` on targets that carry a teacher's logits
beside the labels (`tfprune.distillation`: the dense model as teacher).
Irregular runs prune all five kernels with one magnitude ranking across them (the small first convolution
is not forced to the average); filter runs remove the same fraction of filters and units of every layer but
the logits (coupled groups: a filter's kernel column, its bias and the next layer's input channel), which
`compact_lenet` cuts out of the model.
"""
from __future__ import annotations

import time

import tensorflow as tf

from tfprune._keras import keras
from tfprune.admm import ADMM
from tfprune.callbacks import GradualPruningCallback
from tfprune.layers import prune
from tfprune.models.lenet import WEIGHT_LAYERS, build_lenet5
from tfprune.nested import NestedMasks
from tfprune.report import zero_fraction
from tfprune.schedules import OneShot, PolynomialDecay
from tfprune.structure import unit_groups

METHODS = ("oneshot", "gradual", "admm")
PATTERNS = ("irregular", "filter")


def compile_model(model, learning_rate: float, steps: int, loss=None):
    """Adam, its learning rate cosine-decayed to 0 over `steps`; cross-entropy on logits, or `loss` (a
    distillation loss: its targets are not labels, so no accuracy metric then)."""
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps))),
                  loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=None if loss else ["accuracy"])
    return model


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return -(-examples // batch_size)


def train_dense(x, y, epochs: int, batch_size: int, learning_rate: float, seed: int, verbose=0):
    keras.utils.set_random_seed(seed)
    model = compile_model(build_lenet5(seed=seed), learning_rate, epochs * steps_per_epoch(len(x), batch_size))
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose, shuffle=True)
    return model


def weight_layers(model) -> list:
    """The five weight layers in network order, unwrapped (a wrapper's kernel is its layer's)."""
    by_name = {getattr(layer, "layer", layer).name: getattr(layer, "layer", layer) for layer in model.layers}
    return [by_name[name] for name in WEIGHT_LAYERS]


def kernel_sparsity(model) -> float:
    """Fraction of zeros over the five kernels, read from the weights."""
    return zero_fraction([layer.kernel for layer in weight_layers(model)])


def plain_copy(model):
    """A plain LeNet-5 with `model`'s weights (wrapped layers' kernels hold kernel * mask already)."""
    plain = build_lenet5()
    for name, layer in zip(WEIGHT_LAYERS, weight_layers(model)):
        plain.get_layer(name).set_weights([layer.kernel.numpy(), layer.bias.numpy()])
    return plain


def prunable_copy(dense, pattern: str = "unstructured"):
    """(a copy of `dense` with its five weight layers wrapped, the wrappers in network order)."""
    model = build_lenet5()
    model.set_weights(dense.get_weights())
    wrappers = {w.layer.name: w for w in prune(model, pattern)}
    return model, [wrappers[name] for name in WEIGHT_LAYERS]


def prune_run(dense, method: str, pattern: str, sparsity: float, x, y, epochs: int, batch_size: int,
              learning_rate: float, seed: int, admm_options: dict | None = None, loss=None) -> tuple:
    """(the pruned model, stripped; what the run recorded). See the module docstring for the methods; `y`
    the labels, or the targets of `loss`."""
    if method not in METHODS or pattern not in PATTERNS:
        raise ValueError(f"unknown method/pattern {method}/{pattern}")
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    per_epoch = steps_per_epoch(len(x), batch_size)
    model, wrappers = prunable_copy(dense, "unstructured" if pattern == "irregular" else "unit")
    groups = unit_groups(wrappers) if pattern == "filter" else []
    layers = [] if groups else wrappers
    record = {"method": method, "pattern": pattern, "sparsity": sparsity, "epochs": epochs}
    if method == "admm":
        options = dict(admm_options or {})
        admm_epochs = min(epochs - 1, max(1, round(epochs * options.pop("fraction", 0.5))))
        iterations = options.pop("iterations", 30)
        admm = ADMM(layers, sparsity, steps_per_iteration=max(1, admm_epochs * per_epoch // iterations),
                    iterations=iterations, global_ranking=pattern == "irregular", groups=groups, **options)
        admm.attach(model)
        compile_model(model, learning_rate, admm_epochs * per_epoch, loss)
        model.fit(x, y, epochs=admm_epochs, batch_size=batch_size, verbose=0, shuffle=True, callbacks=[admm])
        admm.hard_prune()
        record["admm"] = {"epochs": admm_epochs, "iterations": admm.done, "rho_start": admm.rho_start,
                          "rho_end": admm.history[-1]["rho"], "distance_end": admm.history[-1]["distance"]}
        compile_model(model, learning_rate, (epochs - admm_epochs) * per_epoch, loss)
        model.fit(x, y, epochs=epochs - admm_epochs, batch_size=batch_size, verbose=0, shuffle=True)
    else:
        total = epochs * per_epoch
        if method == "oneshot":
            schedule = OneShot(sparsity)
        else:
            end = max(1, 2 * total // 3)
            schedule = PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end, frequency=max(1, end // 30))
        compile_model(model, learning_rate, total, loss)
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True,
                  callbacks=[GradualPruningCallback(schedule, layers=layers, groups=groups,
                                                    global_ranking=pattern == "irregular")])
    model = plain_copy(model)
    record["seconds"] = time.perf_counter() - start
    record["measured_sparsity"] = kernel_sparsity(model)
    return model, record


def nested_run(dense, levels, x, y, epochs: int, batch_size: int, learning_rate: float, seed: int,
               loss=None) -> tuple:
    """(the model, the NestedMasks): levels grown sparsest first from the dense magnitudes (one ranking
    across the five kernels), each trained `epochs` with the sparser levels' weights frozen and biases of
    its own."""
    keras.utils.set_random_seed(seed)
    model = build_lenet5()
    model.set_weights(dense.get_weights())
    layers = [model.get_layer(name) for name in WEIGHT_LAYERS]
    nested = NestedMasks(layers, levels)
    reference = [layer.kernel.numpy() for layer in layers]
    for level in nested.levels:
        nested.grow(reference)
        nested.start_training(level, reference)
        compile_model(model, learning_rate, epochs * steps_per_epoch(len(x), batch_size), loss)
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
        nested.finish_training(level)
    return model, nested


def time_against_dense(dense, compact, x, iterations: int) -> dict:
    """Both models' forward passes (traced functions, no Keras predict overhead) on `x`, timed interleaved
    (`export.interleaved`): {dense_ms, compact_ms (medians), speedup (median of per-round ratios)}."""
    from tfprune.export.interleaved import interleave, summarize

    inputs = tf.constant(x)
    calls = {name: tf.function(lambda v, m=model: m(v, training=False)) for name, model in
             (("dense", dense), ("compact", compact))}
    timed = summarize(interleave({name: (lambda c=call: c(inputs).numpy()) for name, call in calls.items()},
                                 iterations), "dense")
    return {"dense_ms": timed["dense"]["p50_ms"], "compact_ms": timed["compact"]["p50_ms"],
            "speedup": timed["compact"]["speedup"]}
