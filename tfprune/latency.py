"""Timing what sparsity buys a ReLU MLP without biases: dense, masked and sparse-matmul forward passes, and
a latency timer.

Masked kernels are as slow as dense ones: the zeros are still multiplied. Speed comes from either removing
dead units physically (unit pruning: `compaction`, then the dense forward of the smaller kernels) or
skipping zeros (weight pruning: sparse matmul). All variants here are plain tf.functions over the same
kernels, so the framework overhead is the same and the ratios show what the sparsity buys.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import tensorflow as tf


def dense_forward(kernels: list[np.ndarray]):
    """x -> logits with ReLU between kernels, as one tf.function over constant kernels."""
    weights = [tf.constant(k) for k in kernels]

    @tf.function(reduce_retracing=True)
    def forward(x):
        for w in weights[:-1]:
            x = tf.nn.relu(tf.matmul(x, w))
        return tf.matmul(x, weights[-1])

    return forward


def masked_forward(kernels: list[np.ndarray], masks: list[np.ndarray]):
    """A network that multiplies by its masks at inference (as tfmot's wrapper does): kernel * mask, then a
    dense matmul. PrunableDense's kernel already holds the zeros: it runs as `dense_forward`."""
    weights = [tf.constant(k) for k in kernels]
    mask_tensors = [tf.constant(m) for m in masks] + [None] * (len(kernels) - len(masks))

    @tf.function(reduce_retracing=True)
    def forward(x):
        for i, (w, m) in enumerate(zip(weights, mask_tensors)):
            x = tf.matmul(x, w * m if m is not None else w)
            if i < len(weights) - 1:
                x = tf.nn.relu(x)
        return x

    return forward


def sparse_forward(kernels: list[np.ndarray], dense_last: bool = True):
    """Sparse matmul for every kernel (the logits kernel stays dense when `dense_last`).

    Activations are kept transposed (features x batch) so every product is sparse(W^T) @ dense(h^T), the
    form tf.sparse.sparse_dense_matmul is fast at.
    """
    def as_sparse(kernel):
        transposed = np.ascontiguousarray(kernel.T)
        rows, cols = np.nonzero(transposed)
        return tf.sparse.SparseTensor(np.stack([rows, cols], 1).astype(np.int64), transposed[rows, cols], transposed.shape)

    hidden = [as_sparse(k) for k in (kernels[:-1] if dense_last else kernels)]
    last = tf.constant(kernels[-1].T) if dense_last else None

    @tf.function(reduce_retracing=True)
    def forward(x):
        h = tf.transpose(x)
        for i, w in enumerate(hidden):
            h = tf.sparse.sparse_dense_matmul(w, h)
            if i < len(kernels) - 1:
                h = tf.nn.relu(h)
        if last is not None:
            h = tf.matmul(last, h)
        return tf.transpose(h)

    return forward


def latency_ms(call, runs: int = 20, warmup: int = 3) -> dict:
    """Wall time of call() in ms over `runs` calls after `warmup` calls (tracing included there): p50, p90."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return {"p50": statistics.median(times), "p90": times[int(0.9 * (len(times) - 1))], "runs": runs}


def median_latency_ms(forward, x: np.ndarray, runs: int = 20, warmup: int = 3) -> float:
    """Median ms of forward(x), the result fetched to the host."""
    x = tf.constant(x)
    return latency_ms(lambda: forward(x).numpy(), runs, warmup)["p50"]
