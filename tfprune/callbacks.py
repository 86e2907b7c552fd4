"""Driving the masks from a schedule: `PruningStep` (any training loop) and `GradualPruningCallback` (fit).

The step always comes from `optimizer.iterations`, never from a private counter: a resumed run (checkpoint
restored, optimizer included) continues at the right point of the schedule, and layers called several times
per step do not advance it (tfmot counts per layer call and drifts). The callback reads it at the start of
each epoch, adds fit's batch index, and checks it at the second batch and wherever the schedule acts.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfprune import native
from tfprune.criteria import global_keep_masks, keep_mask, newly_pruned, pruned_count
from tfprune.layers import PrunableDense, prunable_layers, reapply_masks
from tfprune.schedules import Schedule
from tfprune.strip import tensor_label


_POOL = None


def _newly_pruned(kernel: tf.Variable, mask: tf.Variable, sparsity: float) -> tuple[np.ndarray, int] | None:
    """`criteria.newly_pruned` on the layer's variables: (flat indices to prune, as a column, non-zero
    weights left), or None."""
    kernel, mask = np.asarray(kernel.value()), np.asarray(mask.value())  # views, no copies
    found = newly_pruned(np.abs(kernel).ravel(), mask.ravel() != 0, sparsity)
    return None if found is None else (found[0][:, None], found[1])


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="tfprune-mask")
    return _POOL


class PruningStep:
    """Updates the masks of `layers` when `schedule` says so. Call `update(step)` once per step, before the
    step's forward pass: in a custom loop, `pruner.update(int(optimizer.iterations))`. Its first call
    re-applies the masks to the kernels, after whatever was written to them before training."""

    def __init__(self, layers: list[PrunableDense], schedule: Schedule, global_ranking: bool = False):
        if not layers:
            raise ValueError("no PrunableDense layers to prune: wrap some Dense layers first")
        self.layers, self.schedule, self.global_ranking = list(layers), schedule, global_ranking
        if global_ranking and len({layer.pattern for layer in self.layers}) > 1:
            raise ValueError("global ranking needs one pattern for all layers, got "
                             f"{sorted({layer.pattern.name for layer in self.layers})}")
        self.started = False
        self.last_update_step = None
        self._count = self._install = self._zero_out_compiled = None
        self._counts_at_update = None
        self._padded_length = 256

    def start(self) -> None:
        """kernel *= mask for every layer: the forward pass reads the kernels as they are."""
        reapply_masks(self.layers)
        self.started = True

    def update(self, step: int) -> bool:
        """Recompute the masks if the schedule updates at `step`; True when it did."""
        if not self.started:
            self.start()
        if not self.schedule.should_update(step) or step == self.last_update_step:
            return False
        sparsity = self.schedule.sparsity_at(step)
        counts = [None] * len(self.layers)
        if not self.global_ranking and all(layer.pattern.name == "unstructured" for layer in self.layers):
            counts = self._prune_smallest(sparsity)
        redo = [i for i, count in enumerate(counts) if count is None]  # all, or masks pruning more than asked
        if redo:
            for i, count in zip(redo, self._recompute(redo, sparsity)):
                counts[i] = count
        self._counts_at_update = np.array(counts)
        self.last_update_step = step
        return True

    def _prune_smallest(self, sparsity: float) -> list[int | None]:
        """The common case, gradual unstructured pruning: the few smallest kept weights of each kernel go.
        Non-zero weights left per layer, None for a layer whose mask already prunes more (left untouched)."""
        ops = native.ops()
        distributed = any(isinstance(layer.kernel, tf.distribute.DistributedValues) for layer in self.layers)
        if ops is not None and not distributed and all(layer.kernel.dtype == tf.float32 for layer in self.layers):
            # One op for all layers, in place (csrc/prune_ops.cc): the same weights as newly_pruned.
            added, nonzero = ops.tfprune_prune_smallest(
                [layer.kernel.handle for layer in self.layers], [layer.mask.handle for layer in self.layers],
                [layer.sparsity.handle for layer in self.layers],
                [pruned_count(int(np.prod(layer.kernel.shape)), sparsity) for layer in self.layers], sparsity)
            return [None if a < 0 else int(c) for a, c in zip(added.numpy(), nonzero.numpy())]
        # numpy threads (their loops release the GIL) on views of the variables (TensorFlow copies a
        # buffer before writing it while a view is alive: none is, after this).
        found = list(_pool().map(_newly_pruned, [layer.kernel for layer in self.layers],
                                 [layer.mask for layer in self.layers], [sparsity] * len(self.layers)))
        indices = [np.empty((0, 1), np.int64) if f is None else f[0] for f in found]
        if self._zero_out_compiled is None:
            self._zero_out_compiled = tf.function(self._zero_out, jit_compile=not distributed, input_signature=(
                [tf.TensorSpec([None, 1], tf.int64)] * len(self.layers), tf.TensorSpec([len(self.layers)], tf.int32),
                tf.TensorSpec([], tf.float32)))
        # XLA compiles the install once per shape: pad every layer's indices to one length, a power of
        # two that only grows (a gradual schedule prunes most at its start: one or two compilations)
        self._padded_length = max(self._padded_length, 1 << max(len(column) for column in indices).bit_length())
        padding = np.zeros((self._padded_length, 1), np.int64)
        self._zero_out_compiled([np.concatenate([column, padding[len(column):]]) for column in indices],
                                np.array([len(column) for column in indices], np.int32), np.float32(sparsity))
        return [None if f is None else f[1] for f in found]

    def _recompute(self, which: list[int], sparsity: float) -> list[int]:
        """Masks of layers `which` computed afresh from their kernels (any pattern, global ranking);
        returns their non-zero counts."""
        layers = [self.layers[i] for i in which]
        kernels = [layer.kernel.numpy() for layer in layers]
        if self.global_ranking:
            masks = global_keep_masks(kernels, sparsity, layers[0].pattern)
        else:
            masks = list(_pool().map(keep_mask, kernels, [sparsity] * len(kernels), [layer.pattern for layer in layers]))
        if self._install is None:  # all layers in one graph call: this runs every few steps
            self._install = tf.function(self._install_masks, reduce_retracing=True)
        self._install(tuple(which), [tf.constant(m) for m in masks], tf.constant(sparsity, tf.float32))
        return [int(np.count_nonzero(m & (k != 0))) for k, m in zip(kernels, masks)]

    def _install_masks(self, which, masks, sparsity):
        for i, mask in zip(which, masks):
            self.layers[i]._install_mask(mask, sparsity)

    def _zero_out(self, indices, counts, sparsity):
        """mask and kernel to 0 at the first counts[i] flat indices of layer i (the rest is padding), by
        adding minus their values. Not a scatter into the variables: one sparse write puts a TensorFlow
        variable in copy-on-read mode for good, and every later read of the kernel, at every training
        step, would copy it. Compiled by XLA, this is ~1.5 ms for the FOR.ai MLP at a thousand indices a
        layer, 3 ms once the padding has grown to 32k, against 3 ms op by op even for a thousand."""
        for layer, where, count in zip(self.layers, indices, tf.unstack(counts)):
            real = tf.range(tf.shape(where)[0]) < count
            for variable in (layer.mask, layer.kernel):
                flat = tf.reshape(variable, [-1])
                minus = tf.where(real, -tf.gather(flat, where[:, 0]), tf.zeros([], variable.dtype))
                variable.assign(tf.reshape(tf.tensor_scatter_nd_add(flat, where, minus), variable.shape))
            layer.sparsity.assign(sparsity)

    def nonzero_counts(self, step: int | None = None) -> np.ndarray:
        """Non-zero count of every pruned kernel (what the optimizer actually left), in one graph call; at
        the step of a mask update (no optimizer step since), the counts the update derived on the way."""
        if step is not None and step == self.last_update_step and self._counts_at_update is not None:
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
        self._epoch_first_step, self._step_per_batch = None, False

    def on_train_begin(self, logs=None):
        layers = self._layers if self._layers is not None else prunable_layers(self.model)
        # Kept across fit() calls on the same layers: its traced functions would otherwise be traced again.
        if self.pruner is None or self.pruner.layers != layers:
            self.pruner = PruningStep(layers, self.schedule, self.global_ranking)
        self.pruner.start()  # weights loaded or assigned since the last fit may hold pruned positions
        self._epoch_first_step = None
        if self.log_dir and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        # Reading the optimizer's step right after a train step costs ~0.5 ms (2 % of the FOR.ai MLP's
        # step on 2 cores): read it once an epoch, and again wherever the schedule has something to do.
        self._epoch_first_step = None if self._step_per_batch else self._step()

    def on_train_batch_begin(self, batch, logs=None):
        start = time.perf_counter()
        if self._epoch_first_step is None:
            step = self._step()
        else:
            step = self._epoch_first_step + batch  # fit's batch index counts steps, steps_per_execution too
            if self.schedule.should_update(step) or self._logs_at(step) or batch == 1:  # batch 1: one step a batch?
                actual = self._step()
                if actual != step:  # the optimizer does not step once a batch here: read it every batch
                    self._step_per_batch, self._epoch_first_step, step = True, None, actual
        if self.pruner.update(step) or self._logs_at(step):
            self.log(step)
        self.seconds += time.perf_counter() - start

    def _logs_at(self, step: int) -> bool:
        return bool(self.log_every) and step % self.log_every == 0

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
