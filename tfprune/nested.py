"""Nested masks: one set of weights that serves several sparsity levels.

Levels are trained sparsest first. Each denser level keeps every weight of the sparser one and adds the
strongest of the others (by the magnitude of a reference, usually the dense model), so the masks nest; while
it trains, the sparser levels' weights are frozen (a constraint writes them back after every optimizer step)
and only the added ones learn. Each level has its own biases (a few hundred numbers per level in a LeNet-5,
against tens of thousands of kernel weights), trained with its new weights from the sparser level's: a
denser level need not live with biases fitted to a sparser one. The stored model is the densest level's
weights plus, per weight, the sparsest level that keeps it, and every level's biases; `set_level` writes any
level into the model, so a device picks its level at run time (e.g. by battery) from one file.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfprune import kernel_mask
from tfprune.criteria import compute_global_masks, compute_mask
from tfprune.errors import TfpruneError


class FrozenPart:
    """A kernel constraint: kernel = frozen + kernel * trainable after every optimizer step."""

    def __init__(self, frozen: np.ndarray, trainable: np.ndarray):
        self.frozen = tf.constant(frozen)
        self.trainable = tf.constant(trainable.astype(frozen.dtype))

    def __call__(self, kernel):
        return self.frozen + kernel * self.trainable


class NestedMasks:
    """Levels of sparsity for the kernels of `layers` (plain registered layers: Dense, Conv2D, ...).

    Args:
        layers: the layers whose kernels are pruned.
        levels: sparsities in [0, 1), distinct; kept sorted sparsest first.
        global_ranking: one magnitude ranking across the layers at each level (else each layer at the level).
    Raises:
        TfpruneError: no levels, repeated levels or one outside [0, 1).
    """

    def __init__(self, layers: list, levels, global_ranking: bool = True):
        levels = [float(level) for level in levels]
        if not levels or len(set(levels)) != len(levels) or not all(0.0 <= s < 1.0 for s in levels):
            raise TfpruneError(f"nested levels must be distinct sparsities in [0, 1), got {levels}")
        self.layers, self.global_ranking = list(layers), global_ranking
        self.levels = sorted(levels, reverse=True)
        # per kernel: index (into self.levels) of the sparsest level that keeps each weight; len(levels): none
        self.level_of = [np.full(layer.kernel.shape, len(self.levels), np.int16) for layer in self.layers]
        self.weights = [layer.kernel.numpy().copy() for layer in self.layers]
        # per level (index into self.levels), each layer's trained bias (None: no bias, or not trained yet)
        self.biases: list[list[np.ndarray | None]] = [[None] * len(self.layers) for _ in self.levels]
        self.grown = 0  # levels whose masks exist

    def _index(self, sparsity: float, grown: bool = False) -> int:
        """The level's index; with `grown`, only a level whose mask exists."""
        for i, level in enumerate(self.levels):
            if abs(level - float(sparsity)) < 1e-9:
                if grown and i >= self.grown:
                    raise TfpruneError(f"nested level {sparsity:g} has no mask yet: grow it first")
                return i
        raise TfpruneError(f"no nested level {sparsity:g}; levels: {self.levels}")

    def mask(self, sparsity: float) -> list[np.ndarray]:
        """Each kernel's keep-mask at level `sparsity`."""
        i = self._index(sparsity)
        return [level_of <= i for level_of in self.level_of]

    def grow(self, reference: list[np.ndarray]) -> float:
        """Add the next level's mask: the previous level's weights plus the largest |reference| (kernels in
        the layers' shapes) among the rest, to the level's count. Returns the level's sparsity."""
        if self.grown == len(self.levels):
            raise TfpruneError("every nested level has its mask already")
        i, sparsity = self.grown, self.levels[self.grown]
        # already-kept weights rank first (infinite score), so the new mask contains the old one
        scores = [np.where(level_of < i, np.inf, np.abs(r)).reshape(-1, 1)
                  for level_of, r in zip(self.level_of, reference)]
        if self.global_ranking:
            keeps = compute_global_masks(scores, sparsity)
        else:
            keeps = [compute_mask(s, sparsity) for s in scores]
        for level_of, keep in zip(self.level_of, keeps):
            level_of[keep.reshape(level_of.shape) & (level_of == len(self.levels))] = i
        self.grown += 1
        return sparsity

    def start_training(self, sparsity: float, initial: list[np.ndarray]) -> None:
        """Write level `sparsity` into the kernels (its new weights from `initial`, the sparser levels' as
        trained; its biases from the next sparser level's, if trained) and freeze the sparser levels'
        weights for the coming training (the new weights and the biases learn). Compile the model
        afterwards: a train step traced before holds the constraints of then."""
        i = self._index(sparsity, grown=True)
        if i > 0:
            self._write_biases(i - 1)
        for layer, level_of, stored, init in zip(self.layers, self.level_of, self.weights, initial):
            frozen = np.where(level_of < i, stored, 0).astype(stored.dtype)
            new = level_of == i
            layer.kernel.assign(frozen + np.where(new, init, 0).astype(stored.dtype))
            kernel_mask.set_constraint(layer.kernel, FrozenPart(frozen, new))

    def finish_training(self, sparsity: float) -> None:
        """Store the trained new weights and the biases of level `sparsity` and release the constraints."""
        i = self._index(sparsity)
        for j, (layer, level_of, stored) in enumerate(zip(self.layers, self.level_of, self.weights)):
            new = level_of == i
            stored[new] = layer.kernel.numpy()[new]
            kernel_mask.set_constraint(layer.kernel, None)
            if getattr(layer, "bias", None) is not None:
                self.biases[i][j] = layer.bias.numpy().copy()

    def set_level(self, sparsity: float) -> None:
        """Write level `sparsity` (grown and trained) into the model's kernels and biases."""
        i = self._index(sparsity, grown=True)
        for layer, level_of, stored in zip(self.layers, self.level_of, self.weights):
            layer.kernel.assign(np.where(level_of <= i, stored, 0).astype(stored.dtype))
        self._write_biases(i)

    def _write_biases(self, i: int) -> None:
        for layer, bias in zip(self.layers, self.biases[i]):
            if bias is not None:
                layer.bias.assign(bias)

    def state(self) -> dict:
        """What one stored model needs besides the layers' other weights: levels, the densest level's kernels,
        each weight's level index and every level's biases (per level, per layer; None where a layer has
        none)."""
        return {"levels": list(self.levels), "weights": [w.copy() for w in self.weights],
                "level_of": [lv.copy() for lv in self.level_of],
                "biases": [[None if b is None else b.copy() for b in level] for level in self.biases]}
