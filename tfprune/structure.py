"""Coupled structures: one pruning decision that spans several tensors.

An MLP unit is a column of W_l (and its bias) and the matching input row of W_l+1; a BERT FFN neuron is
column j of the up-projection, its bias j and row j of the down-projection; an attention head is d columns
of Q, K and V (and their biases) and d rows of the attention output. Removing a unit means zeroing all of it,
which is what later lets compaction cut it out of the model.

A `CoupledGroup` lists its `Member`s: a wrapper, which of its tensors ("kernel" or "bias"), an axis of that
tensor's 2-D view (0: rows, 1: units; a bias has only axis 0), and for every unit of the group the indices
along that axis that belong to it. A unit's score is the L2 norm over all its elements in all members, so a
unit whose up column is small but whose down row is large is not mistaken for a weak one. Masks are written
to every member; a tensor in several groups (an MLP kernel: its columns in one group, its rows in the
previous one) keeps the intersection of what they keep.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfprune.errors import TfpruneError


@dataclass
class Member:
    """The part of one tensor that a group's units own: `index[u]` are unit u's indices along `axis` (of the
    kernel's 2-D view; of the flattened bias)."""

    wrapper: object
    part: str
    axis: int
    index: np.ndarray

    def __post_init__(self):
        if self.part not in ("kernel", "bias"):
            raise TfpruneError(f"member part must be 'kernel' or 'bias', got {self.part!r}")
        self.index = np.asarray(self.index, np.int64)
        if self.index.ndim == 1:
            self.index = self.index[:, None]
        extent = self.shape_2d[self.axis] if self.axis in (0, 1) and self.axis < len(self.shape_2d) else None
        if extent is None:
            raise TfpruneError(f"member axis must be 0 or 1 for a kernel, 0 for a bias; got {self.axis} "
                               f"for the {self.part} of {self.wrapper.name}")
        if self.index.size and (self.index.min() < 0 or self.index.max() >= extent):
            raise TfpruneError(f"member indices of {self.wrapper.name}'s {self.part} must lie in [0, {extent}) "
                               f"along axis {self.axis}")
        if self.part == "bias":
            self.wrapper.ensure_bias_mask()

    @property
    def shape_2d(self) -> tuple:
        if self.part == "kernel":
            return self.wrapper.view.shape_2d
        return (int(np.prod(self.wrapper.layer.bias.shape)),)

    def values(self) -> np.ndarray:
        """The tensor as the group sees it: the kernel's 2-D view, or the bias flattened."""
        if self.part == "kernel":
            return self.wrapper.view.to_2d(self.wrapper.kernel.numpy())
        return self.wrapper.layer.bias.numpy().ravel()

    def unit_squares(self, values: np.ndarray | None = None) -> np.ndarray:
        """Sum of squares of each unit's elements in this member: of the tensor, or of `values` in its view
        (what ADMM projects: W + U)."""
        values = self.values() if values is None else values
        values = np.moveaxis(np.square(values.astype(np.float64)), self.axis, 0)
        along = values.reshape(values.shape[0], -1).sum(axis=1)
        return along[self.index].sum(axis=1)

    def keep(self, kept_units: np.ndarray) -> np.ndarray:
        """This member's contribution to its tensor's mask (2-D view or bias shape): False on pruned units."""
        keep_along = np.ones(self.shape_2d[self.axis], bool)
        keep_along[self.index[~kept_units].ravel()] = False
        shape = [1] * len(self.shape_2d)
        shape[self.axis] = -1
        return np.broadcast_to(keep_along.reshape(shape), self.shape_2d)


@dataclass
class CoupledGroup:
    """`units` units, each spread over `members`; pruned and kept as wholes.

    Args:
        name: shown in logs and reports ("layer_0/ffn_neurons", "hidden1/units").
        members: the tensors the units own, each with `units` rows of indices.
    Raises:
        TfpruneError: no members, or members that disagree on the number of units.
    """

    name: str
    members: list
    kept: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        if not self.members:
            raise TfpruneError(f"group {self.name!r} has no members")
        counts = {len(m.index) for m in self.members}
        if len(counts) != 1:
            raise TfpruneError(f"members of group {self.name!r} disagree on the number of units: {sorted(counts)}")
        if self.kept is None:
            self.kept = np.ones(self.units, bool)

    @property
    def units(self) -> int:
        return len(self.members[0].index)

    def scores(self, values: dict | None = None) -> np.ndarray:
        """L2 norm of each unit over all members' elements: of the tensors, or of `values`
        ({(id(wrapper), part): array in the member's view}) in their place."""
        if values is None:
            return np.sqrt(sum(m.unit_squares() for m in self.members))
        return np.sqrt(sum(m.unit_squares(values[id(m.wrapper), m.part]) for m in self.members))

    def kept_in_weights(self) -> np.ndarray:
        """Boolean per unit: False where every element of the unit is zero in every member, read from the
        weights (what a checkpoint or compaction sees), not from the masks."""
        return self.scores() > 0

    @property
    def wrappers(self) -> list:
        seen, result = set(), []
        for member in self.members:
            if id(member.wrapper) not in seen:
                seen.add(id(member.wrapper))
                result.append(member.wrapper)
        return result


def pruned_units(units: int, sparsity: float) -> int:
    """Units a group prunes at `sparsity`: the nearest count, one unit always kept."""
    return min(int(sparsity * units + 0.5), units - 1)


def choose_units(groups: list[CoupledGroup], sparsity: float, global_ranking: bool = False,
                 scores: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Boolean kept-units per group. Identical-layer rule: every group prunes `pruned_units(units, sparsity)`
    of its own lowest-scoring units. Global ranking: the lowest scores across all groups go, as many as the
    groups' counts added up, each group keeping at least one unit. Ties go in index order. `scores`: per
    group, in place of the groups' own (`CoupledGroup.scores`)."""
    from tfprune.criteria import _check_sparsity

    _check_sparsity(sparsity)
    scores = [g.scores() for g in groups] if scores is None else scores
    if not global_ranking:
        kept = []
        for group, score in zip(groups, scores):
            keep = np.ones(group.units, bool)
            keep[np.argsort(score, kind="stable")[:pruned_units(group.units, sparsity)]] = False
            kept.append(keep)
        return kept
    flat = np.concatenate(scores)
    owner = np.concatenate([np.full(g.units, i) for i, g in enumerate(groups)])
    target = sum(pruned_units(g.units, sparsity) for g in groups)
    keep = np.ones(flat.size, bool)
    left = np.array([g.units for g in groups])
    pruned = 0
    for position in np.argsort(flat, kind="stable"):
        if pruned == target:
            break
        if left[owner[position]] > 1:
            keep[position] = False
            left[owner[position]] -= 1
            pruned += 1
    return np.split(keep, np.cumsum([g.units for g in groups])[:-1])


def combined_masks(groups: list[CoupledGroup], kept: list[np.ndarray]) -> dict:
    """{(id(wrapper), part): (wrapper, part, keep mask)}: the intersection of every group's contribution,
    kernels in their 2-D view."""
    masks = {}
    for group, keep_units in zip(groups, kept):
        for member in group.members:
            key = (id(member.wrapper), member.part)
            contribution = member.keep(keep_units)
            if key in masks:
                masks[key] = (member.wrapper, member.part, masks[key][2] & contribution)
            else:
                masks[key] = (member.wrapper, member.part, contribution.copy())
    return masks


def _input_rows(wrapper, channels: int) -> np.ndarray:
    """For each input channel of `wrapper`'s layer, the rows of its 2-D view that read it: (channels, k).
    The input channel is the last row axis (Dense: the input; convolutions: `in` after the kernel window)."""
    view = wrapper.view
    rows = view.shape_2d[0]
    if rows % channels:
        raise TfpruneError(f"{wrapper.name} has {rows} rows, not a multiple of the {channels} units feeding it")
    return np.arange(rows).reshape(rows // channels, channels).T


def unit_groups(wrappers: list, include_bias: bool = True) -> list[CoupledGroup]:
    """One group per wrapper but the last of a chain (MLP or same-padding CNN, each layer feeding the next
    directly): unit j of layer l is its column j (and bias j) and the input rows of layer l+1 that read j.

    Raises:
        TfpruneError: fewer than two wrappers, or a layer whose units do not match the next one's inputs.
    """
    if len(wrappers) < 2:
        raise TfpruneError("unit groups need a chain of at least two wrapped layers (the last one's inputs "
                           "are the previous one's units)")
    groups = []
    for layer, following in zip(wrappers[:-1], wrappers[1:]):
        units = layer.view.shape_2d[1]
        members = [Member(layer, "kernel", 1, np.arange(units)), Member(following, "kernel", 0, _input_rows(following, units))]
        if include_bias and getattr(layer.layer, "bias", None) is not None and layer.layer.bias.shape[0] == units:
            members.insert(1, Member(layer, "bias", 0, np.arange(units)))
        groups.append(CoupledGroup(f"{getattr(layer, 'label', None) or layer.layer.name}/units", members))
    return groups


def group_report(groups: list[CoupledGroup]) -> list[dict]:
    """Per group: units, units kept by its masks, units alive in the weights (not all zero)."""
    return [{"name": g.name, "units": g.units, "kept": int(g.kept.sum()), "alive_in_weights": int(g.kept_in_weights().sum())}
            for g in groups]
