"""Schedule -> mask updates: `PruningStep` updates the masks of wrappers and coupled groups at the steps
a schedule names, choosing the fastest way that gives the same masks (the compiled op, numpy threads).

The step always comes from the caller, who takes it from `optimizer.iterations`, never from a private
counter: a resumed run (checkpoint restored, optimizer included) continues at the right point of the
schedule, and layers called several times per step do not advance it (tfmot counts per layer call and drifts).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from tfprune import native
from tfprune.criteria import applicable, compute_global_masks, compute_mask, newly_pruned, parse_spec, pruned_count
from tfprune.errors import NonFiniteWeightsError, TfpruneError
from tfprune.layers import PrunableLayer, reapply_masks
from tfprune.report import tensor_label
from tfprune.schedules import Schedule, peak_sparsity
from tfprune.structure import CoupledGroup, choose_units, combined_masks

_POOL = None


def _newly_pruned(kernel: tf.Variable, mask: tf.Variable, sparsity: float) -> tuple[np.ndarray, int] | None | bool:
    """`criteria.newly_pruned` on the layer's variables: (flat indices to prune, as a column, non-zero
    weights left), None, or False when the kernel holds NaN or inf (checked on the magnitudes it reads anyway)."""
    kernel, mask = np.asarray(kernel.value()), np.asarray(mask.value())  # views, no copies
    values = np.abs(kernel).ravel()
    if not np.isfinite(values).all():
        return False
    found = newly_pruned(values, mask.ravel() != 0, sparsity)
    return None if found is None else (found[0][:, None], found[1])


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="tfprune-mask")
    return _POOL


def check_patterns(layers: list[PrunableLayer], sparsity: float) -> None:
    """Every layer's pattern fits its weight's 2-D view and can reach `sparsity`: checked when pruning is set
    up, before any training step, rather than at the first mask update.

    Raises:
        TfpruneError: an N:M pattern whose m does not divide the rows or whose ceiling (m - n) / m is below
            `sparsity`; a block larger than the view.
    """
    for layer in layers:
        pattern, label, view = layer.pattern, tensor_label(layer), layer.view
        if pattern.name == "set":
            if all(applicable(parse_spec(spec), view.shape_2d, view.spatial, sparsity) for spec in pattern.candidates):
                raise TfpruneError(f"no pattern of the set {list(pattern.candidates)} applies to {label} "
                                   f"({view.shape_2d[0]} x {view.shape_2d[1]}) at sparsity {sparsity:g}")
            continue
        problem = applicable(pattern, view.shape_2d, view.spatial, sparsity)
        if problem:
            raise TfpruneError(f"{label}: {problem}")


def check_ranking(layers: list[PrunableLayer], global_ranking: bool) -> None:
    """A global ranking needs one pattern for all layers, and one whose groups can be ranked together.

    Raises:
        TfpruneError: mixed patterns, or N:M, kernel shapes or a pattern set, under a global ranking.
    """
    if not global_ranking:
        return
    if len({layer.pattern for layer in layers}) > 1:
        raise TfpruneError("global ranking needs one pattern for all layers, got "
                           f"{sorted({layer.pattern.name for layer in layers})}")
    chosen_per_kernel = {layer.pattern.name for layer in layers} & {"nm", "kernel", "set"}
    if chosen_per_kernel:
        raise TfpruneError(f"global ranking does not apply to the {sorted(chosen_per_kernel)[0]} pattern (its "
                           "structure is per window or chosen per kernel); use layer-wise ranking")


def layer_masks(layers: list[PrunableLayer], kernels: list[np.ndarray], sparsity: float,
                global_ranking: bool = False) -> list[np.ndarray]:
    """Keep-masks (2-D views) of `kernels` (the layers' weights, or anything of their shapes, as 2-D views)
    at `sparsity`: one ranking across them, or each layer by its own pattern (a pattern set's choice made
    and kept), layers in parallel threads. What the pruner installs and what ADMM projects onto."""
    spatials = [layer.view.spatial for layer in layers]
    if global_ranking:
        return compute_global_masks(kernels, sparsity, layers[0].pattern, spatials)
    patterns = [layer.resolved_pattern(sparsity) for layer in layers]
    return list(_pool().map(compute_mask, kernels, [sparsity] * len(kernels), patterns, spatials))


class PruningStep:
    """Updates the masks of `layers` (each with its own pattern) and of coupled `groups` (whole units) when
    `schedule` says so. Call `update(step)` once per step, before the step's forward pass: in a custom loop,
    `pruner.update(int(optimizer.iterations))`. Its first call re-applies the masks to the weights, after
    whatever was written to them before training.

    Args:
        layers: wrappers pruned by their own pattern.
        schedule: step -> target sparsity (of each layer's elements; of each group's units).
        global_ranking: one ranking across all layers (one pattern for all), and across all groups.
        groups: coupled groups; the wrappers they touch are driven by the groups only.
    Raises:
        TfpruneError: nothing to prune, global ranking over mixed patterns or with N:M, or a wrapper both in
            `layers` and in a group.
    """

    def __init__(self, layers: list[PrunableLayer], schedule: Schedule, global_ranking: bool = False,
                 groups: list[CoupledGroup] | None = None):
        self.groups = list(groups or [])
        if not layers and not self.groups:
            raise TfpruneError("nothing to prune: wrap some layers first (tfprune.prune) or pass coupled groups")
        self.layers, self.schedule, self.global_ranking = list(layers), schedule, global_ranking
        check_ranking(self.layers, global_ranking)
        check_patterns(self.layers, peak_sparsity(schedule))
        grouped = {id(w) for g in self.groups for w in g.wrappers}
        both = [layer.name for layer in self.layers if id(layer) in grouped]
        if both:
            raise TfpruneError(f"{both} are both pruned by their own pattern and members of coupled groups; "
                               "pass each wrapper one way")
        # every wrapper whose kernel is logged: the layers, then the groups' wrappers (each once)
        self.logged = self.layers + list(dict.fromkeys(w for g in self.groups for w in g.wrappers))
        self._position = {id(w): i for i, w in enumerate(self.logged)}
        self.started = False
        self.last_update_step = None
        self._tally = self._install = self._zero_out_compiled = self._install_groups = None
        self._counts_at_update = None
        self._padded_length = 256

    def start(self) -> None:
        """weight *= mask for every wrapper: the forward pass reads the weights as they are. Groups read their
        kept units back from the weights (a resumed run's report must match the uninterrupted run's)."""
        reapply_masks(self.logged)
        for group in self.groups:
            group.kept = group.kept_in_weights()
        self.started = True

    def update(self, step: int) -> bool:
        """Recompute the masks if the schedule updates at `step`; True when it did."""
        if not self.started:
            self.start()
        if not self.schedule.should_update(step) or step == self.last_update_step:
            return False
        sparsity = self.schedule.sparsity_at(step)
        counts = [None] * len(self.layers)
        fast = self.layers and not self.global_ranking and all(layer.pattern.name == "unstructured"
                                                               for layer in self.layers)
        if not fast or self.groups:  # the fast path checks its own layers in the compiled op's pass
            self.check_finite(step)
        if fast:
            counts = self._prune_smallest(sparsity, step)
        redo = [i for i, count in enumerate(counts) if count is None]  # all, or masks pruning more than asked
        if redo:
            for i, count in zip(redo, self._recompute(redo, sparsity)):
                counts[i] = count
        if self.groups:
            counts += self._update_groups(sparsity)
        self._counts_at_update = np.array(counts, np.int64)
        self.last_update_step = step
        return True

    def check_finite(self, step: int) -> None:
        """Raises NonFiniteWeightsError, naming the tensors and `step`, if a pruned weight is NaN or inf: masks
        are not ranked from a diverged run's weights (each update checks; the callback also at epoch ends)."""
        self._counted(step)

    def _counted(self, step: int | None) -> np.ndarray:
        """Non-zero count of every kernel of `logged`, in one graph call that also checks they are finite
        (raising NonFiniteWeightsError if not): one call, not two, right after a training step."""
        if self._tally is None:
            kernels = [layer.kernel for layer in self.logged]
            self._tally = tf.function(lambda: (tf.stack([tf.math.count_nonzero(k) for k in kernels]),
                                               tf.stack([tf.reduce_all(tf.math.is_finite(k)) for k in kernels])))
        counts, finite = self._tally()
        self._raise_if_nonfinite(finite.numpy(), step)
        return counts.numpy()

    def _raise_if_nonfinite(self, finite: np.ndarray, step: int | None) -> None:
        """`finite`: one bool per tensor of `logged` (a prefix of it will do)."""
        if not finite.all():
            labels = [tensor_label(layer) for layer, ok in zip(self.logged, finite) if not ok]
            where = f" at step {step}" if step is not None else ""
            raise NonFiniteWeightsError(
                f"non-finite weights (NaN or inf) in {', '.join(labels)}{where}: training diverged "
                "(lower the learning rate, or check the inputs and the loss)")

    def _update_groups(self, sparsity: float) -> list[int]:
        """Whole units of every group, chosen from the scores of all their members; masks installed in one
        graph call. Returns the non-zero counts of the group wrappers' kernels."""
        kept = choose_units(self.groups, sparsity, self.global_ranking)
        for group, keep in zip(self.groups, kept):
            group.kept = keep
        masks = combined_masks(self.groups, kept)
        kernels, biases = [], []
        for wrapper, part, keep in masks.values():
            if part == "kernel":
                kernels.append((self._position[id(wrapper)], wrapper.view.from_2d(keep)))
            else:
                biases.append((self._position[id(wrapper)], keep.reshape(wrapper.layer.bias.shape)))
        if self._install_groups is None:
            self._install_groups = tf.function(self._install_group_masks, reduce_retracing=True)
        self._install_groups(tuple(i for i, _ in kernels), [tf.constant(m) for _, m in kernels],
                             tuple(i for i, _ in biases), [tf.constant(m) for _, m in biases],
                             tf.constant(sparsity, tf.float32))
        return [int(c) for c in self._counted(None)[len(self.layers):]]  # groups are updated rarely

    def _install_group_masks(self, kernel_which, kernel_masks, bias_which, bias_masks, sparsity):
        for i, mask in zip(kernel_which, kernel_masks):
            self.logged[i]._install_mask(mask, sparsity)
        for i, mask in zip(bias_which, bias_masks):
            self.logged[i]._install_bias_mask(mask)

    def _prune_smallest(self, sparsity: float, step: int) -> list[int | None]:
        """The common case, gradual unstructured pruning: the few smallest kept weights of each kernel go.
        Non-zero weights left per layer, None for a layer whose mask already prunes more (left untouched)."""
        ops = native.ops()
        distributed = any(isinstance(layer.kernel, tf.distribute.DistributedValues) for layer in self.layers)
        if ops is not None and not distributed and all(layer.kernel.dtype == tf.float32 for layer in self.layers):
            # One op for all layers, in place (csrc/prune_ops.cc): the same weights as newly_pruned.
            added, nonzero, nonfinite = ops.tfprune_prune_smallest(
                [layer.kernel.handle for layer in self.layers], [layer.mask.handle for layer in self.layers],
                [layer.sparsity.handle for layer in self.layers],
                [pruned_count(int(np.prod(layer.kernel.shape)), sparsity) for layer in self.layers], sparsity)
            self._raise_if_nonfinite(nonfinite.numpy() == 0, step)  # counted in the op's own pass: free
            return [None if a < 0 else int(c) for a, c in zip(added.numpy(), nonzero.numpy())]
        # numpy threads (their loops release the GIL) on views of the variables (TensorFlow copies a
        # buffer before writing it while a view is alive: none is, after this).
        found = list(_pool().map(_newly_pruned, [layer.kernel for layer in self.layers],
                                 [layer.mask for layer in self.layers], [sparsity] * len(self.layers)))
        self._raise_if_nonfinite(np.array([f is not False for f in found]), step)  # before anything is written
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
        views = [layer.view for layer in layers]
        kernels = [view.to_2d(layer.kernel.numpy()) for view, layer in zip(views, layers)]
        masks = layer_masks(layers, kernels, sparsity, self.global_ranking)
        if self._install is None:  # all layers in one graph call: this runs every few steps
            self._install = tf.function(self._install_masks, reduce_retracing=True)
        self._install(tuple(which), [tf.constant(view.from_2d(m)) for view, m in zip(views, masks)],
                      tf.constant(sparsity, tf.float32))
        return [int(np.count_nonzero(m & (k != 0))) for k, m in zip(kernels, masks)]

    def _install_masks(self, which, masks, sparsity):
        for i, mask in zip(which, masks):
            self.layers[i]._install_mask(mask, sparsity)

    def _zero_out(self, indices, counts, sparsity):
        """mask and kernel to 0 at the first counts[i] flat indices of layer i (the rest is padding), by
        adding minus their values. Not a scatter into the variables: one sparse write puts a TensorFlow
        variable in copy-on-read mode for good, and every later read of the kernel, at every training
        step, would copy it. Compiled by XLA, which runs it several times faster than op by op."""
        for layer, where, count in zip(self.layers, indices, tf.unstack(counts)):
            real = tf.range(tf.shape(where)[0]) < count
            for variable in (layer.mask, layer.kernel):
                flat = tf.reshape(variable, [-1])
                minus = tf.where(real, -tf.gather(flat, where[:, 0]), tf.zeros([], variable.dtype))
                variable.assign(tf.reshape(tf.tensor_scatter_nd_add(flat, where, minus), variable.shape))
            layer.sparsity.assign(sparsity)

    def nonzero_counts(self, step: int | None = None) -> np.ndarray:
        """Non-zero count of every pruned kernel (`logged`: layers, then group wrappers; what the optimizer
        actually left), in one graph call; at the step of a mask update (no optimizer step since), the
        counts the update derived on the way.

        Raises:
            NonFiniteWeightsError: a kernel holds NaN or inf (the callback's epoch-end log checks so).
        """
        if step is not None and step == self.last_update_step and self._counts_at_update is not None:
            return self._counts_at_update
        return self._counted(step)

    def nonzero_pct(self, step: int | None = None) -> tuple[dict[str, float], float]:
        """(% non-zero per tensor label, % non-zero over all pruned tensors)."""
        counts = self.nonzero_counts(step)
        sizes = np.array([int(np.prod(layer.kernel.shape)) for layer in self.logged])
        per_tensor = {tensor_label(layer): 100.0 * c / n for layer, c, n in zip(self.logged, counts, sizes)}
        return per_tensor, 100.0 * counts.sum() / sizes.sum()

    def kept_units_pct(self) -> dict[str, float]:
        """% of units each coupled group keeps, by group name."""
        return {group.name: 100.0 * group.kept.sum() / group.units for group in self.groups}
