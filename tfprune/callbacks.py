"""Driving the masks from a schedule: `PruningStep` (any training loop) and `GradualPruningCallback` (fit).

The step always comes from `optimizer.iterations`, never from a private counter: a resumed run (checkpoint
restored, optimizer included) continues at the right point of the schedule, and layers called several times
per step do not advance it (tfmot counts per layer call and drifts).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfprune.criteria import global_keep_masks, keep_mask, magnitude_threshold, pruned_count
from tfprune.layers import PrunableDense, prunable_layers
from tfprune.schedules import Schedule
from tfprune.strip import tensor_label


_POOL = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="tfprune-mask")
    return _POOL


class PruningStep:
    """Updates the masks of `layers` when `schedule` says so. Call `update(step)` once per step, before the
    step's forward pass: in a custom loop, `pruner.update(int(optimizer.iterations))`."""

    def __init__(self, layers: list[PrunableDense], schedule: Schedule, global_ranking: bool = False):
        if not layers:
            raise ValueError("no PrunableDense layers to prune: wrap some Dense layers first")
        self.layers, self.schedule, self.global_ranking = list(layers), schedule, global_ranking
        if global_ranking and len({layer.pattern for layer in self.layers}) > 1:
            raise ValueError("global ranking needs one pattern for all layers, got "
                             f"{sorted({layer.pattern.name for layer in self.layers})}")
        self.last_update_step = None
        self._count = None
        self._install = self._install_above = None
        self._counts_at_update = None

    def update(self, step: int) -> bool:
        """Recompute the masks if the schedule updates at `step`; True when it did."""
        if not self.schedule.should_update(step) or step == self.last_update_step:
            return False
        sparsity = self.schedule.sparsity_at(step)
        # |kernel| in place on the copies: every criterion ranks by magnitude, and zeros stay zeros
        kernels = [np.abs(k, out=k) for k in (layer.kernel.numpy() for layer in self.layers)]
        if self._install is None:  # all layers in one graph call each: this runs every few steps
            self._install = tf.function(self._install_masks, reduce_retracing=True)
            self._install_above = tf.function(self._install_thresholds, reduce_retracing=True)
        found = None
        if not self.global_ranking and all(layer.pattern.name == "unstructured" for layer in self.layers):
            # numpy finds each threshold; TensorFlow, on every core, compares and installs. Exact unless
            # weights tie at a threshold: then numpy's masks, which break ties, are installed instead.
            found = list(_pool().map(magnitude_threshold, [k.ravel() for k in kernels], [sparsity] * len(kernels)))
        if found and not any(surplus for _, surplus in found) and min(t for t, _ in found) >= 0:
            thresholds = tf.constant([t for t, _ in found], tf.float32)
            self._install_above(thresholds, tf.constant(sparsity, tf.float32))
            # each kept weight is above a threshold >= 0, so non-zero; every other one is now zero
            counts = [k.size - pruned_count(k.size, sparsity) for k in kernels]
        else:
            if self.global_ranking:
                masks = global_keep_masks(kernels, sparsity, self.layers[0].pattern)
            else:  # numpy releases the GIL in its loops, and TensorFlow is idle here: use every core
                masks = list(_pool().map(keep_mask, kernels, [sparsity] * len(kernels),
                                         [layer.pattern for layer in self.layers]))
            self._install([tf.constant(m) for m in masks], tf.constant(sparsity, tf.float32))
            counts = [np.count_nonzero(m & (k != 0)) for k, m in zip(kernels, masks)]
        self._counts_at_update = np.array(counts)  # what the kernels hold once the masks are in
        self.last_update_step = step
        return True

    def _install_masks(self, masks, sparsity):
        for layer, mask in zip(self.layers, masks):
            layer._install_mask(mask, sparsity)

    def _install_thresholds(self, thresholds, sparsity):
        self._install_masks([tf.abs(layer.kernel) > thresholds[i] for i, layer in enumerate(self.layers)], sparsity)

    def nonzero_counts(self, step: int | None = None) -> np.ndarray:
        """Non-zero count of every pruned kernel (what the optimizer actually left), in one graph call; at
        the step of a mask update (no optimizer step since), the counts made by the update itself."""
        if step is not None and step == self.last_update_step:
            return self._counts_at_update
        if self._count is None:
            kernels = [layer.kernel for layer in self.layers]
            self._count = tf.function(lambda: tf.stack([tf.math.count_nonzero(k) for k in kernels]))
        return self._count().numpy()

    def nonzero_pct(self, step: int | None = None) -> tuple[dict[str, float], float]:
        """(% non-zero per tensor label, % non-zero over all pruned tensors)."""
        counts = self.nonzero_counts(step)
        sizes = np.array([int(np.prod(layer.kernel.shape)) for layer in self.layers])
        per_tensor = {tensor_label(layer): 100.0 * c / n for layer, c, n in zip(self.layers, counts, sizes)}
        return per_tensor, 100.0 * counts.sum() / sizes.sum()


class GradualPruningCallback(keras.callbacks.Callback):
    """Prunes every PrunableDense in the model on `schedule` during `fit`, and logs sparsity to TensorBoard.

    Scalars, at the optimizer's step: `pruning/target_sparsity`, `pruning/nonzero_pct/<tensor>` for every
    pruned tensor and `pruning/nonzero_pct/all` over all of them. They are written at every mask update and
    every `log_every` steps (0: only at updates), plus at the end of each epoch.
    """

    def __init__(self, schedule: Schedule, log_dir: str | None = None, global_ranking: bool = False,
                 log_every: int = 0, layers: list[PrunableDense] | None = None, writer=None):
        super().__init__()
        self._supports_tf_logs = True  # otherwise Keras copies the logs to numpy at every batch (a sync)
        self.schedule, self.log_dir, self.global_ranking = schedule, log_dir, global_ranking
        self.log_every, self._layers = log_every, layers
        self.pruner: PruningStep | None = None
        self._writer = writer  # a tf.summary writer shared with other callbacks, or made from log_dir
        self.history: list[dict] = []  # one row per logged step: step, target, nonzero per tensor
        self.seconds = 0.0  # time spent in this callback: the pruning overhead outside the train step

    def on_train_begin(self, logs=None):
        layers = self._layers if self._layers is not None else prunable_layers(self.model)
        # Kept across fit() calls on the same layers: its traced functions would otherwise be traced again.
        if self.pruner is None or self.pruner.layers != layers:
            self.pruner = PruningStep(layers, self.schedule, self.global_ranking)
        if self.log_dir and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        start = time.perf_counter()
        step = self._step()
        updated = self.pruner.update(step)
        if updated or (self.log_every and step % self.log_every == 0):
            self.log(step)
        self.seconds += time.perf_counter() - start

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        self.log(self._step())
        self.seconds += time.perf_counter() - start

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def log(self, step: int) -> None:
        """Record (and write to TensorBoard, if a log_dir was given) the sparsity at `step`."""
        per_tensor, overall = self.pruner.nonzero_pct(step)
        target = self.schedule.sparsity_at(step)
        if self.history and self.history[-1]["step"] == step:
            self.history.pop()
        self.history.append({"step": step, "target_sparsity": target, "nonzero_pct_all": overall,
                             "nonzero_pct": per_tensor})
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            tf.summary.scalar("pruning/target_sparsity", target)
            tf.summary.scalar("pruning/nonzero_pct/all", overall)
            for label, value in per_tensor.items():
                tf.summary.scalar(f"pruning/nonzero_pct/{label}", value)
