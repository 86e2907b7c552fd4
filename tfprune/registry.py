"""Which weight of a layer is pruned, and its 2-D view: rows x units.

A *unit* is an output neuron (Dense, EinsumDense's output axes) or an output channel (convolutions); a *row*
is everything one unit reads. Criteria work on this view only, so one criterion serves every layer type:
unit pruning of a Conv2D is filter pruning, row pruning removes one input position of every filter. Masks
are stored in the weight's own shape; `to_2d` / `from_2d` move between the two.

Register another layer type with `register(cls, weight, unit_axes)`; the most derived registered class wins.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tfprune._keras import keras
from tfprune.errors import TfpruneError


@dataclass(frozen=True)
class View:
    """How one layer's weight maps to rows x units: a permutation of its axes (row axes first, then unit
    axes) and the number of leading axes that form the rows."""

    weight: str
    shape: tuple
    permutation: tuple
    row_axes: int

    @property
    def shape_2d(self) -> tuple[int, int]:
        dims = [self.shape[a] for a in self.permutation]
        return int(np.prod(dims[:self.row_axes], dtype=np.int64)), int(np.prod(dims[self.row_axes:], dtype=np.int64))

    @property
    def spatial(self) -> tuple:
        """The row axes but the last, which is the input channel: a convolution's kernel window ((kh, kw) for
        a Conv2D), () for a Dense. The 2-D view's rows run over (window position, channel), channel fastest."""
        return tuple(self.shape[a] for a in self.permutation[:self.row_axes - 1])

    def to_2d(self, array) -> np.ndarray:
        """The weight (numpy, its own shape) as rows x units."""
        return np.transpose(np.asarray(array), self.permutation).reshape(self.shape_2d)

    def from_2d(self, array) -> np.ndarray:
        """A rows x units array (a mask) back in the weight's shape."""
        permuted = tuple(self.shape[a] for a in self.permutation)
        return np.transpose(np.asarray(array).reshape(permuted), np.argsort(self.permutation))


@dataclass(frozen=True)
class Entry:
    weight: str
    unit_axes: object  # a tuple of axes, or a function (layer) -> tuple of axes


_REGISTRY: dict[type, Entry] = {}


def register(cls: type, weight: str, unit_axes) -> None:
    """Make `cls` prunable: `weight` names its attribute (e.g. "kernel"), `unit_axes` the axes (negative
    counts from the end) that index its units, or a function of the built layer that returns them."""
    _REGISTRY[cls] = Entry(weight, unit_axes)


def entry_for(layer) -> Entry | None:
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def is_prunable(layer) -> bool:
    return entry_for(layer) is not None


def registered_types() -> list[type]:
    return list(_REGISTRY)


def view(layer) -> View:
    """The 2-D view of a built registered layer's weight."""
    entry = entry_for(layer)
    if entry is None:
        raise TfpruneError(f"layer {layer.name!r} of type {type(layer).__name__} has no registered prunable weight; "
                           f"registered: {sorted(t.__name__ for t in _REGISTRY)}")
    shape = tuple(int(d) for d in getattr(layer, entry.weight).shape)
    axes = entry.unit_axes(layer) if callable(entry.unit_axes) else entry.unit_axes
    units = tuple(sorted(a % len(shape) for a in axes))
    rows = tuple(a for a in range(len(shape)) if a not in units)
    return View(entry.weight, shape, rows + units, len(rows))


def _einsum_unit_axes(layer) -> tuple:
    """EinsumDense: the kernel's axes that appear in the output (e.g. "abc,cde->abde": d and e)."""
    match = re.match(r"([a-zA-Z.]+),([a-zA-Z.]+)->([a-zA-Z.]+)", layer.equation.replace(" ", ""))
    if match is None:
        raise TfpruneError(f"cannot read EinsumDense equation {layer.equation!r}")
    kernel, output = match.group(2), match.group(3)
    axes = tuple(i for i, letter in enumerate(kernel) if letter in output)
    if not axes or len(axes) == len(kernel):
        raise TfpruneError(f"EinsumDense equation {layer.equation!r}: its kernel needs both contracted and output axes")
    return axes


register(keras.layers.Dense, "kernel", (-1,))                      # (in, out)
register(keras.layers.EinsumDense, "kernel", _einsum_unit_axes)    # contracted axes x output axes
register(keras.layers.Conv1D, "kernel", (-1,))                     # (k, in, out): filters
register(keras.layers.Conv2D, "kernel", (-1,))                     # (kh, kw, in, out)
register(keras.layers.Conv3D, "kernel", (-1,))
register(keras.layers.DepthwiseConv2D, "depthwise_kernel", (-2, -1))  # (kh, kw, in, multiplier): channels
register(keras.layers.Conv2DTranspose, "kernel", (-2,))            # (kh, kw, out, in)
