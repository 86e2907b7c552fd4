"""ADMM pruning (Zhang et al., ECCV 2018): train toward a sparse copy of the weights, then prune to it.

Pruning is the constraint "W in S" (S: the masks of the target sparsity and pattern). ADMM splits it: training
minimises loss(W) + sum over layers of (rho / 2) ||W - Z + U||^2, and every `steps_per_iteration` steps
Z <- projection of W + U onto S (the best mask of W + U applied to it: the pattern's exact projection, as
`compute_mask` ranks by L2), U <- U + W - Z, rho <- min(rho * rho_growth, rho_max). The weights drift toward a
sparse Z while the loss keeps them useful (U, the dual variable scaled by 1 / rho, is rescaled when rho
grows); `hard_prune` then installs the mask of W (the "hard prune"), and a
masked retrain with the same wrappers follows, pruned weights frozen at zero by the wrappers' masked updates.

Coupled groups (`tfprune.structure`: filters and units, BERT's FFN neurons and heads) are projected as wholes:
Z keeps the units whose L2 norm over all their members' elements of W + U is largest (`choose_units`, the
pruner's rule), so the penalty pulls every tensor a unit spans (its column, bias and the next layer's rows)
toward the same removal, and the hard prune installs the groups' masks.

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
from tfprune.structure import CoupledGroup, choose_units, combined_masks


def _tensor(wrapper, part: str) -> tf.Variable:
    return wrapper.kernel if part == "kernel" else wrapper.layer.bias


def _as_view(wrapper, part: str, array: np.ndarray) -> np.ndarray:
    """`array` (the tensor's shape) as coupled groups see it: the kernel's 2-D view, the bias flattened."""
    return wrapper.view.to_2d(array) if part == "kernel" else array.ravel()


def _from_view(wrapper, part: str, array: np.ndarray) -> np.ndarray:
    return wrapper.view.from_2d(array) if part == "kernel" else array.reshape(wrapper.layer.bias.shape)


class ADMM(keras.callbacks.Callback):
    """The ADMM penalty and its Z/U/rho updates for `layers` (wrappers of any registered layer and pattern).

    Args:
        layers: the wrappers to prune weight by weight; each is projected with its own pattern (or one
            ranking across all of them with `global_ranking`, which needs one pattern with groups).
        sparsity: the target of `layers` (and of `groups` given as a plain list), in [0, 1).
        groups: coupled groups pruned as wholes: a list of `CoupledGroup`s (at `sparsity`: the fraction of
            each group's units), or of (fraction, groups) pairs, each set at its own fraction (BERT's neurons
            and heads); with `global_ranking`, one ranking across the groups of a set.
        rho: the penalty's initial weight, > 0 (the reference LeNet-5 recipe: 1e-4 fixed, or 1e-3 doubled).
        rho_growth: rho's factor after every ADMM iteration, >= 1.
        rho_max: rho's ceiling.
        steps_per_iteration: optimizer steps between Z/U updates (an epoch, in the reference recipe).
        iterations: Z/U updates at most (None: until training ends).
        global_ranking: one ranking across the layers (one pattern with groups) instead of each layer's own.
        hard_prune_step: prune by itself after this optimizer step (None: the caller calls `hard_prune`).
        writer: a tf.summary writer for `admm/rho` and `admm/distance` at every update.
    Raises:
        TfpruneError: a knob out of range, a pattern that cannot reach `sparsity` on a layer, no layers or
            groups, a layer both pruned by itself and in a group.
    """

    def __init__(self, layers: list[PrunableLayer], sparsity: float, rho: float = 1e-3, rho_growth: float = 1.0,
                 rho_max: float = 1.0, steps_per_iteration: int = 100, iterations: int | None = None,
                 global_ranking: bool = False, hard_prune_step: int | None = None, writer=None,
                 groups: list | None = None):
        super().__init__()
        layers = list(layers)
        groups = list(groups or [])
        if groups and isinstance(groups[0], CoupledGroup):
            groups = [(sparsity, groups)]
        if not layers and not any(members for _, members in groups):
            raise TfpruneError("ADMM needs wrapped layers or coupled groups: wrap them first (tfprune.prune)")
        _check_sparsity(sparsity)
        for fraction, _ in groups:
            _check_sparsity(fraction)
        grouped = {id(w) for _, members in groups for g in members for w in g.wrappers}
        both = [layer.name for layer in layers if id(layer) in grouped]
        if both:
            raise TfpruneError(f"{both} are both pruned weight by weight and members of coupled groups")
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
        self.layers, self.sparsity, self.global_ranking = layers, float(sparsity), global_ranking
        self.groups = [(float(fraction), list(members)) for fraction, members in groups]
        # the tensors the penalty pulls: the layers' kernels, then each tensor the groups span, once
        self.parts = [(layer, "kernel") for layer in layers] + list(dict.fromkeys(
            (m.wrapper, m.part) for _, members in self.groups for g in members for m in g.members))
        self.rho_start, self.rho_growth, self.rho_max = float(rho), float(rho_growth), float(rho_max)
        self.steps_per_iteration, self.iterations = int(steps_per_iteration), iterations
        self.rho = tf.Variable(float(rho), trainable=False, dtype=tf.float32, name="admm_rho")
        tensors = [_tensor(w, part) for w, part in self.parts]
        self.z = [tf.Variable(t, trainable=False, name="admm_z") for t in tensors]
        self.u = [tf.Variable(tf.zeros_like(t), trainable=False, name="admm_u") for t in tensors]
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
        return self.rho / 2.0 * tf.add_n([tf.reduce_sum(tf.square(_tensor(w, part) - z + u))
                                          for (w, part), z, u in zip(self.parts, self.z, self.u)])

    def attach(self, model) -> None:
        """Add the penalty to `model`'s losses (before `compile`/`fit`: a traced train step holds its losses)."""
        if not self.attached:
            model.add_loss(self.penalty)
            self.attached = True

    def _projection_masks(self, arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list]:
        """(the keep-masks of `arrays`, one per tensor of `parts` in its shape, at the targets: the pruner's;
        the kept units of every group set). Layers by their patterns, groups as wholes."""
        n = len(self.layers)
        views = [layer.view for layer in self.layers]
        masks = layer_masks(self.layers, [view.to_2d(a) for view, a in zip(views, arrays)], self.sparsity,
                            self.global_ranking) if self.layers else []
        masks = [view.from_2d(m) for view, m in zip(views, masks)]
        if not self.groups:
            return masks, []
        values = {(id(w), part): _as_view(w, part, a) for (w, part), a in zip(self.parts[n:], arrays[n:])}
        kept, combined = [], {}
        for fraction, members in self.groups:
            chosen = choose_units(members, fraction, self.global_ranking, [g.scores(values) for g in members])
            kept.append(chosen)
            for key, (wrapper, part, keep) in combined_masks(members, chosen).items():
                combined[key] = (wrapper, part, combined[key][2] & keep if key in combined else keep)
        masks += [_from_view(w, part, combined[id(w), part][2]) for w, part in self.parts[n:]]
        return masks, kept

    def update_z(self) -> None:
        """Z <- projection of W + U; U <- U + W - Z (the first call, before training: Z = projection of W)."""
        weights = [_tensor(w, part).numpy() for w, part in self.parts]
        shifted = [w + u.numpy() for w, u in zip(weights, self.u)]
        projected = [np.where(keep, s, 0).astype(w.dtype)
                     for w, s, keep in zip(weights, shifted, self._projection_masks(shifted)[0])]
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

    def on_train_begin(self, logs=None):
        if self.pruned:  # resumed after the hard prune: the groups' kept units, read back from the weights
            for _, members in self.groups:
                for group in members:
                    group.kept = group.kept_in_weights()

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
        model retrains masked; returns each tensor's sparsity as installed (the order of `parts`)."""
        masks, kept = self._projection_masks([_tensor(w, part).numpy() for w, part in self.parts])
        n = len(self.layers)
        for layer, keep in zip(self.layers, masks):
            layer.set_mask(keep, self.sparsity)
        target = {id(w): fraction for fraction, members in self.groups for g in members for w in g.wrappers}
        for (wrapper, part), keep in zip(self.parts[n:], masks[n:]):
            if part == "kernel":
                wrapper.set_mask(keep, target[id(wrapper)])
            else:
                wrapper._install_bias_mask(keep)
        for (_, members), chosen in zip(self.groups, kept):
            for group, keep_units in zip(members, chosen):
                group.kept = keep_units
        self.rho.assign(0.0)
        return [1.0 - float(np.mean(keep)) for keep in masks]
