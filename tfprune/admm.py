"""ADMM pruning (Zhang et al., ECCV 2018): train toward a sparse copy of the weights, then prune to it.

Pruning is the constraint "W in S" (S: the masks of the target sparsity and pattern). ADMM splits it: training
minimises loss(W) + sum over layers of (rho / 2) ||W - Z + U||^2, and every `steps_per_iteration` steps
Z <- projection of W + U onto S (the best mask of W + U applied to it: the pattern's exact projection, as
`compute_mask` ranks by L2), U <- U + W - Z, rho <- min(rho * rho_growth, rho_max). The weights drift toward a
sparse Z while the loss keeps them useful (U, the dual variable scaled by 1 / rho, is rescaled when rho
grows); `hard_prune` then installs the mask of W (the "hard prune"), and a
masked retrain with the same wrappers follows, pruned weights frozen at zero by the wrappers' masked updates.

Use: wrap the layers (`tfprune.prune`, masks all ones), `admm = ADMM(wrappers, 0.95)`, `admm.attach(model)`
before `compile`, `model.fit(..., callbacks=[admm])`, `admm.hard_prune()`, then fit again to retrain; or give
`hard_prune_step` and one `fit` does both (the masks are variables the traced step reads, so the same step
trains the penalty before the prune and keeps the pruned weights at zero after it).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfprune._keras import keras
from tfprune.criteria import _check_sparsity
from tfprune.errors import TfpruneError
from tfprune.layers import PrunableLayer
from tfprune.pruner import check_patterns, check_ranking, layer_masks


class ADMM(keras.callbacks.Callback):
    """The ADMM penalty and its Z/U/rho updates for `layers` (wrappers of any registered layer and pattern).

    Args:
        layers: the wrappers to prune; each is projected with its own pattern (or one ranking across all of
            them with `global_ranking`, which needs one pattern with groups).
        sparsity: the target, in [0, 1).
        rho: the penalty's initial weight, > 0 (the reference LeNet-5 recipe: 1e-4 fixed, or 1e-3 doubled).
        rho_growth: rho's factor after every ADMM iteration, >= 1.
        rho_max: rho's ceiling.
        steps_per_iteration: optimizer steps between Z/U updates (an epoch, in the reference recipe).
        iterations: Z/U updates at most (None: until training ends).
        global_ranking: one ranking across the layers (one pattern with groups) instead of each layer's own.
        hard_prune_step: prune by itself after this optimizer step (None: the caller calls `hard_prune`).
        writer: a tf.summary writer for `admm/rho` and `admm/distance` at every update.
    Raises:
        TfpruneError: a knob out of range, a pattern that cannot reach `sparsity` on a layer, no layers.
    """

    def __init__(self, layers: list[PrunableLayer], sparsity: float, rho: float = 1e-3, rho_growth: float = 1.0,
                 rho_max: float = 1.0, steps_per_iteration: int = 100, iterations: int | None = None,
                 global_ranking: bool = False, hard_prune_step: int | None = None, writer=None):
        super().__init__()
        if not layers:
            raise TfpruneError("ADMM needs wrapped layers: wrap them first (tfprune.prune)")
        _check_sparsity(sparsity)
        for name, value, low in (("rho", rho, 0.0), ("rho_max", rho_max, 0.0)):
            if not (math.isfinite(value) and value > low):
                raise TfpruneError(f"ADMM {name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(rho_growth) and rho_growth >= 1.0):
            raise TfpruneError(f"ADMM rho_growth must be a finite number >= 1, got {rho_growth!r}")
        if rho > rho_max:
            raise TfpruneError(f"ADMM rho ({rho:g}) must not exceed rho_max ({rho_max:g})")
        for name, value in (("steps_per_iteration", steps_per_iteration), ("iterations", iterations),
                            ("hard_prune_step", hard_prune_step)):
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
                raise TfpruneError(f"ADMM {name} must be a positive integer, got {value!r}")
        check_ranking(layers, global_ranking)
        check_patterns(layers, sparsity)
        self.layers, self.sparsity, self.global_ranking = list(layers), float(sparsity), global_ranking
        self.rho_start, self.rho_growth, self.rho_max = float(rho), float(rho_growth), float(rho_max)
        self.steps_per_iteration, self.iterations = int(steps_per_iteration), iterations
        self.rho = tf.Variable(float(rho), trainable=False, dtype=tf.float32, name="admm_rho")
        self.z = [tf.Variable(layer.kernel, trainable=False, name="admm_z") for layer in self.layers]
        self.u = [tf.Variable(tf.zeros_like(layer.kernel), trainable=False, name="admm_u") for layer in self.layers]
        self.hard_prune_step, self.writer = hard_prune_step, writer
        self._done = tf.Variable(0, trainable=False, dtype=tf.int64, name="admm_updates")
        # what a resumed run needs (tf.train.Checkpoint tracks the dict): Z, U, rho, the updates made
        self.state = {"z": self.z, "u": self.u, "rho": self.rho, "updates": self._done}
        self.history: list[dict] = []  # per update: step, rho, relative distance ||W - Z|| / ||W||
        self.attached = False
        self._last_step = None
        self.update_z()

    @property
    def done(self) -> int:
        """Z/U updates so far (the first, before training, not counted)."""
        return int(self._done.numpy())

    @property
    def pruned(self) -> bool:
        """The hard prune has happened (the penalty is off)."""
        return float(self.rho.numpy()) == 0.0

    def penalty(self) -> tf.Tensor:
        """(rho / 2) * sum ||W - Z + U||^2: the term `attach` adds to the model's loss."""
        return self.rho / 2.0 * tf.add_n([tf.reduce_sum(tf.square(layer.kernel - z + u))
                                          for layer, z, u in zip(self.layers, self.z, self.u)])

    def attach(self, model) -> None:
        """Add the penalty to `model`'s losses (before `compile`/`fit`: a traced train step holds its losses)."""
        if not self.attached:
            model.add_loss(self.penalty)
            self.attached = True

    def _projection_masks(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The keep-masks of the target sparsity for `arrays` (each layer's weight shape): the pruner's."""
        views = [layer.view for layer in self.layers]
        masks = layer_masks(self.layers, [view.to_2d(a) for view, a in zip(views, arrays)], self.sparsity,
                            self.global_ranking)
        return [view.from_2d(m) for view, m in zip(views, masks)]

    def update_z(self) -> None:
        """Z <- projection of W + U; U <- U + W - Z (the first call, before training: Z = projection of W)."""
        weights = [layer.kernel.numpy() for layer in self.layers]
        shifted = [w + u.numpy() for w, u in zip(weights, self.u)]
        projected = [np.where(keep, s, 0).astype(w.dtype)
                     for w, s, keep in zip(weights, shifted, self._projection_masks(shifted))]
        for z, u, s, p in zip(self.z, self.u, shifted, projected):
            z.assign(p)
            u.assign(s - p)  # U + W - Z
        gap = math.sqrt(sum(float(np.sum(np.square(w - p))) for w, p in zip(weights, projected)))
        size = math.sqrt(sum(float(np.sum(np.square(w))) for w in weights)) or 1.0
        entry = {"step": self._last_step or 0, "rho": float(self.rho.numpy()), "distance": gap / size}
        self.history.append(entry)
        if self.writer is not None:
            with self.writer.as_default(step=entry["step"]):
                tf.summary.scalar("admm/rho", entry["rho"])
                tf.summary.scalar("admm/distance", entry["distance"])

    def on_train_batch_end(self, batch, logs=None):
        if not self.attached:
            raise TfpruneError("ADMM: call attach(model) before compile and fit, or the penalty is not trained")
        step = int(self.model.optimizer.iterations.numpy())
        if self.pruned or step == self._last_step:
            return
        if self.hard_prune_step is not None and step >= self.hard_prune_step:
            self.hard_prune()  # `pruned` from now on
            return
        if step % self.steps_per_iteration or (self.iterations is not None and self.done >= self.iterations):
            return
        self._last_step = step
        self.update_z()
        self._done.assign_add(1)
        old = float(self.rho.numpy())
        new = min(old * self.rho_growth, self.rho_max)
        self.rho.assign(new)
        for u in self.u:  # U is the dual scaled by 1 / rho: it shrinks as rho grows
            u.assign(u * (old / new))

    def hard_prune(self) -> list[float]:
        """Install the masks of W at the target (pruned weights zeroed) and switch the penalty off, so the
        model retrains masked; returns each layer's sparsity as installed."""
        masks = self._projection_masks([layer.kernel.numpy() for layer in self.layers])
        for layer, keep in zip(self.layers, masks):
            layer.set_mask(keep, self.sparsity)
        self.rho.assign(0.0)
        return [1.0 - float(np.mean(keep)) for keep in masks]
