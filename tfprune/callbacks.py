"""`GradualPruningCallback`: a `PruningStep` driven by `fit`, with sparsity scalars in TensorBoard.

The callback reads the optimizer's step at the start of each epoch, adds fit's batch index, and checks it at
the second batch and wherever the schedule acts: reading it right after a train step waits for the step,
a cost worth avoiding at every batch.
"""
from __future__ import annotations

import time

import tensorflow as tf

from tfprune._keras import keras
from tfprune.layers import PrunableLayer, prunable_layers
from tfprune.pruner import PruningStep
from tfprune.schedules import Schedule
from tfprune.structure import CoupledGroup


class GradualPruningCallback(keras.callbacks.Callback):
    """Prunes on `schedule` during `fit`, and logs sparsity to TensorBoard.

    Scalars under `tag` ("pruning" unless given), at the optimizer's step: `pruning/target_sparsity`,
    `pruning/nonzero_pct/<tensor>` for every pruned tensor, `pruning/nonzero_pct/all` over all of them, and
    `pruning/units_kept_pct/<group>` for every coupled group. They are written at every mask update and every
    `log_every` steps (0: only at updates), plus at the end of each epoch.

    Args:
        schedule: step -> target sparsity.
        log_dir: where to write TensorBoard events (or pass a shared `writer`); None: no events.
        global_ranking: one ranking across layers (and across groups).
        log_every: scalars every N steps besides the updates.
        layers: the wrappers to prune by their own pattern; default: every wrapper in the model, or none
            when `groups` are given.
        writer: a tf.summary writer shared with other callbacks.
        groups: coupled groups (whole units over several tensors), see `tfprune.structure`.
        tag: the scalars' prefix; two callbacks on one writer (FFN neurons and attention heads, each on its
            own schedule) need two.
    """

    def __init__(self, schedule: Schedule, log_dir: str | None = None, global_ranking: bool = False,
                 log_every: int = 0, layers: list[PrunableLayer] | None = None, writer=None,
                 groups: list[CoupledGroup] | None = None, tag: str = "pruning"):
        super().__init__()
        self.tag = tag
        self._supports_tf_logs = True  # otherwise Keras copies the logs to numpy at every batch (a sync)
        self.schedule, self.log_dir, self.global_ranking = schedule, log_dir, global_ranking
        self.log_every, self._layers, self.groups = log_every, layers, list(groups or [])
        # Built now where the layers are known, so bad patterns and rankings are refused before training.
        self.pruner: PruningStep | None = (PruningStep(list(layers or []), schedule, global_ranking, self.groups)
                                           if layers is not None or self.groups else None)
        self._writer = writer
        self.history: list[dict] = []  # one row per logged step: step, target, nonzero per tensor
        self.seconds = 0.0  # time spent in this callback: the pruning overhead outside the train step
        self._epoch_first_step, self._step_per_batch = None, False

    def on_train_begin(self, logs=None):
        layers = self._layers if self._layers is not None else [] if self.groups else prunable_layers(self.model)
        # Kept across fit() calls on the same layers: its traced functions would otherwise be traced again.
        if self.pruner is None or self.pruner.layers != layers:
            self.pruner = PruningStep(layers, self.schedule, self.global_ranking, self.groups)
        self.pruner.start()  # weights loaded or assigned since the last fit may hold pruned positions
        self._epoch_first_step = None
        if self.log_dir and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
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
        self.log(self._step())  # its count also checks the weights are finite: no NaN model saved in silence
        self.seconds += time.perf_counter() - start

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def log(self, step: int) -> None:
        """Record (and write to TensorBoard, if it has a writer) the sparsity at `step`."""
        per_tensor, overall = self.pruner.nonzero_pct(step)
        units = self.pruner.kept_units_pct()
        target = self.schedule.sparsity_at(step)
        if self.history and self.history[-1]["step"] == step:
            self.history.pop()
        row = {"step": step, "target_sparsity": target, "nonzero_pct_all": overall, "nonzero_pct": per_tensor}
        if units:
            row["units_kept_pct"] = units
        self.history.append(row)
        if self._writer is None:
            return
        with self._writer.as_default(step=step):
            tf.summary.scalar(f"{self.tag}/target_sparsity", target)
            tf.summary.scalar(f"{self.tag}/nonzero_pct/all", overall)
            for label, value in per_tensor.items():
                tf.summary.scalar(f"{self.tag}/nonzero_pct/{label}", value)
            for name, value in units.items():
                tf.summary.scalar(f"{self.tag}/units_kept_pct/{name}", value)
