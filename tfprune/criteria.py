"""Pruning criteria: pure functions from kernels and a target sparsity to 0/1 masks.

Every pattern is expressed the same way: each kernel element belongs to one *group* (itself, its output
column, its input row, its b x b block); a group's score is the L2 norm of its elements; the lowest-scoring
groups are pruned until the number of pruned elements is the one closest to `sparsity * size`. That single
selection rule makes the counts exact to the element for every pattern and lets a global ranking across
layers reuse it unchanged. N:M is the exception (its groups are capped per M-window) and lives in `nm_keep`.

Kernels are 2-D views, rows x units (`registry.View`): a Dense kernel as it is, (inputs, outputs); a
convolution's (kh * kw * in, filters). A *unit* (neuron, filter) is a column, as in the FOR.ai pruning
challenge; a *row* is everything one input position feeds.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from tfprune.errors import TfpruneError

PATTERNS = ("unstructured", "unit", "row", "block", "nm", "channel", "connectivity", "kernel", "set")
SET_DEFAULT = ("unit", "row", "block:4", "block:8", "kernel:4")


@dataclass(frozen=True)
class Pattern:
    """Which structure is pruned, on a kernel's 2-D view (rows x units).

    Args:
        name: "unstructured" (single weights), "unit" (whole columns: neurons, filters), "row" (whole rows),
            "block" (block_size x block_size tiles), "nm" (at most m - n of every m consecutive rows of a
            column pruned); for convolutions also "channel" (an input channel at every kernel position, in
            every filter), "connectivity" (whole k x k kernels: one input channel of one filter) and "kernel"
            (every k x k kernel keeps `entries` positions in one shape of a library, `kernel_library`, chosen
            per kernel by L2; beyond that sparsity whole kernels go); "set": each matrix takes the one of
            `candidates` whose mask keeps the largest L2 norm (`choose_pattern`).
        block_size, n, m, entries: positive integers, n < m.
        candidates: for "set", pattern specs ("unit", "row", "block:8", "kernel:4", ...; `parse_spec`).
    Raises:
        TfpruneError: an unknown name or a bad size.
    """

    name: str = "unstructured"
    block_size: int = 4
    n: int = 2
    m: int = 4
    entries: int = 4
    candidates: tuple = ()

    def __post_init__(self):
        if self.name not in PATTERNS:
            raise TfpruneError(f"pattern must be one of {list(PATTERNS)}, got {self.name!r}")
        for arg in ("block_size", "n", "m", "entries"):
            value = getattr(self, arg)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise TfpruneError(f"{arg} must be a positive integer, got {value!r}")
        if self.n >= self.m:
            raise TfpruneError(f"N:M needs 1 <= n < m, got n={self.n}, m={self.m}")
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if self.name == "set":
            if not self.candidates:
                object.__setattr__(self, "candidates", SET_DEFAULT)
            for spec in self.candidates:
                if parse_spec(spec).name == "set":
                    raise TfpruneError("a pattern set cannot hold another set")
        elif self.candidates:
            raise TfpruneError(f"candidates belong to the 'set' pattern, not {self.name!r}")

    def to_dict(self) -> dict:
        config = asdict(self)
        config["candidates"] = list(self.candidates)
        if not self.candidates:  # configs saved before sets existed stay as they were
            del config["candidates"]
        if self.entries == 4 and self.name != "kernel":
            del config["entries"]
        return config

    @classmethod
    def from_dict(cls, config: dict) -> "Pattern":
        return cls(**config)

    @property
    def spec(self) -> str:
        """The short form `parse_spec` reads: "block:8", "kernel:4", "nm:2:4", "unit"."""
        if self.name == "block":
            return f"block:{self.block_size}"
        if self.name == "kernel":
            return f"kernel:{self.entries}"
        if self.name == "nm":
            return f"nm:{self.n}:{self.m}"
        return self.name


def parse_spec(text: str) -> Pattern:
    """A pattern from its short form: a name, "block:B", "kernel:E" (entries kept per kernel) or "nm:N:M".

    Raises:
        TfpruneError: an unknown name or a size that is not a positive integer.
    """
    name, *sizes = str(text).strip().split(":")
    try:
        numbers = [int(size) for size in sizes]
    except ValueError:
        raise TfpruneError(f"pattern {text!r}: sizes after ':' must be integers") from None
    expected = {"block": 1, "kernel": 1, "nm": 2}.get(name, 0)
    if len(numbers) not in (0, expected):
        raise TfpruneError(f"pattern {text!r}: {name} takes {expected} size(s) after ':'")
    if name == "block" and numbers:
        return Pattern("block", block_size=numbers[0])
    if name == "kernel" and numbers:
        return Pattern("kernel", entries=numbers[0])
    if name == "nm" and numbers:
        return Pattern("nm", n=numbers[0], m=numbers[1])
    return Pattern(name)


def as_pattern(pattern) -> Pattern:
    """A Pattern from a Pattern, its dict or a pattern name.

    Raises:
        TfpruneError: anything else, or an unknown name.
    """
    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, dict):
        return Pattern.from_dict(pattern)
    if isinstance(pattern, str):
        return Pattern(pattern)
    raise TfpruneError(f"pattern must be a Pattern, a dict or a pattern name, got {type(pattern).__name__}")


def parse_nm(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4), with an error that names the flag's expected form."""
    try:
        n, m = (int(part) for part in text.split(":"))
    except ValueError:
        raise TfpruneError(f"nm must look like N:M (e.g. 2:4), got {text!r}") from None
    Pattern("nm", n=n, m=m)
    return n, m


def magnitudes(values: np.ndarray) -> np.ndarray:
    """|values| for ranking, with the rule for non-finite weights: NaN and ±inf rank above every finite
    magnitude (NaN as +inf), so they are pruned last and counts stay exact whatever the weights hold."""
    result = np.abs(values)
    if not np.isfinite(result).all():
        result = np.where(np.isnan(result), np.float32(np.inf), result).astype(result.dtype, copy=False)
    return result


def _check_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise TfpruneError(f"kernel must be a 2-D view (rows, units), got shape {kernel.shape}")
    return kernel


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= float(sparsity) < 1.0:
        raise TfpruneError(f"sparsity must be in [0, 1), got {sparsity!r}")


def positions(spatial: tuple) -> int:
    """Kernel positions per input channel (kh * kw for a Conv2D; 1 for a Dense)."""
    return int(np.prod(spatial, dtype=np.int64)) if spatial else 1


def _channels(kernel: np.ndarray, spatial: tuple) -> int:
    rows = kernel.shape[0]
    if rows % positions(spatial):
        raise TfpruneError(f"a kernel of {rows} rows cannot have kernel positions {tuple(spatial)}")
    return rows // positions(spatial)


def groups(kernel: np.ndarray, pattern: Pattern, spatial: tuple = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group id of every element, score of every group, element count of every group).

    `spatial` is the kernel window of a convolution (`registry.View.spatial`): the 2-D view's rows are
    (position, input channel) with the channel fastest, which "channel" and "connectivity" group by.
    Scores of partial edge blocks are scaled to a full block's size, so a block is not pruned first merely
    for being cut short by the kernel's edge.
    """
    kernel = _check_kernel(kernel).astype(np.float32, copy=False)
    if not np.isfinite(kernel).all():  # the rule of `magnitudes`: non-finite ranks last
        kernel = np.where(np.isfinite(kernel), kernel, np.float32(np.inf))
    rows, cols = kernel.shape
    if pattern.name == "unstructured":
        return np.arange(kernel.size).reshape(kernel.shape), np.abs(kernel).ravel(), np.ones(kernel.size, np.int64)
    if pattern.name == "unit":
        ids = np.broadcast_to(np.arange(cols), kernel.shape)
        return ids, np.linalg.norm(kernel, axis=0), np.full(cols, rows, np.int64)
    if pattern.name == "row":
        ids = np.broadcast_to(np.arange(rows)[:, None], kernel.shape)
        return ids, np.linalg.norm(kernel, axis=1), np.full(rows, cols, np.int64)
    if pattern.name in ("channel", "connectivity"):
        channels = _channels(kernel, spatial)
        channel = np.arange(rows) % channels
        if pattern.name == "channel":
            ids = np.broadcast_to(channel[:, None], kernel.shape)
        else:
            ids = channel[:, None] * cols + np.arange(cols)[None, :]
        sq, sizes = _group_squares(kernel, ids, channels if pattern.name == "channel" else channels * cols)
        return ids, np.sqrt(sq), sizes
    if pattern.name == "block":
        b = pattern.block_size
        block_rows, block_cols = -(-rows // b), -(-cols // b)
        ids = (np.arange(rows) // b)[:, None] * block_cols + (np.arange(cols) // b)[None, :]
        sq, sizes = _group_squares(kernel, ids, block_rows * block_cols)
        return ids, np.sqrt(sq * (b * b) / sizes), sizes
    raise TfpruneError(f"pattern {pattern.name!r} has no group form; use compute_mask")


def _group_squares(kernel: np.ndarray, ids: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum of squared weights, element count) of each of `count` groups, given every element's group id."""
    sq = np.bincount(ids.ravel(), weights=np.square(kernel, dtype=np.float64).ravel(), minlength=count)
    return sq, np.bincount(ids.ravel(), minlength=count).astype(np.int64)


@functools.lru_cache(maxsize=32)
def kernel_library(kh: int, kw: int, entries: int) -> np.ndarray:
    """The shapes a "kernel" pattern chooses from: every 4-connected set of `entries` positions of a kh x kw
    window that holds its centre (PatDNN's patterns for 3x3 and 4 entries are among them), as an array
    (shapes, kh * kw) of booleans in row-major position order.

    Raises:
        TfpruneError: `entries` not below kh * kw, or a library too large to search (over 4096 shapes).
    """
    if not 1 <= entries < kh * kw:
        raise TfpruneError(f"a kernel pattern keeps 1 to {kh * kw - 1} of a {kh}x{kw} kernel's positions, got {entries}")
    centre = (kh // 2) * kw + kw // 2
    level = {frozenset([centre])}
    for _ in range(entries - 1):
        grown = set()
        for shape in level:
            for cell in shape:
                r, c = divmod(cell, kw)
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    if 0 <= r + dr < kh and 0 <= c + dc < kw and (r + dr) * kw + c + dc not in shape:
                        grown.add(shape | {(r + dr) * kw + c + dc})
        level = grown
        if len(level) > 4096:
            raise TfpruneError(f"{kh}x{kw} kernels with {entries} entries have over 4096 shapes; keep fewer entries")
    library = np.zeros((len(level), kh * kw), bool)
    for i, shape in enumerate(sorted(sorted(s) for s in level)):
        library[i, shape] = True
    return library


def _window(spatial: tuple) -> tuple[int, int]:
    if len(spatial) == 1:
        return 1, int(spatial[0])
    if len(spatial) != 2:
        raise TfpruneError(f"kernel patterns need a 1-D or 2-D convolution window, got {tuple(spatial) or 'a Dense'}")
    return int(spatial[0]), int(spatial[1])


def kernel_pattern_keep(kernel: np.ndarray, sparsity: float, spatial: tuple, entries: int) -> np.ndarray:
    """The "kernel" pattern: each kernel (one input channel of one filter) keeps the library shape with the
    largest L2 norm. Kernels are patterned in the order of the energy the pattern removes (least first) until
    the count `sparsity` asks is reached; past every kernel patterned, whole patterned kernels go, weakest
    first (pattern plus connectivity pruning). Counts are the nearest the two steps allow."""
    kernel = _check_kernel(kernel)
    _check_sparsity(sparsity)
    kh, kw = _window(spatial)
    library = kernel_library(kh, kw, entries)
    channels = _channels(kernel, spatial)
    window = kh * kw
    sq = np.square(kernel, dtype=np.float64).reshape(window, channels * kernel.shape[1])  # positions x kernels
    sq[~np.isfinite(sq)] = 1e300  # the rule of `magnitudes`: non-finite weights are kept first
    kept_energy = library.astype(np.float64) @ sq
    best = np.argmax(kept_energy, axis=0)                              # first shape on ties
    shape_keep = library[best].T                                       # positions x kernels
    kernels = sq.shape[1]
    removed, kept = (window - entries), entries
    target = sparsity * kernel.size
    keep = np.ones_like(shape_keep)
    if target >= kernels * removed - removed / 2:
        keep = shape_keep.copy()
        rest = target - kernels * removed
        if rest > kept / 2:
            kept_norm = np.sqrt(np.sum(sq * shape_keep, axis=0))
            keep[:, choose_pruned(kept_norm, np.full(kernels, kept, np.int64), rest)] = False
    else:
        removed_norm = np.sqrt(np.sum(sq * ~shape_keep, axis=0))
        patterned = choose_pruned(removed_norm, np.full(kernels, removed, np.int64), target)
        keep[:, patterned] = shape_keep[:, patterned]
    return keep.reshape(kernel.shape)


def choose_pruned(scores: np.ndarray, sizes: np.ndarray, target: float) -> np.ndarray:
    """Boolean per group: prune the lowest scores while that brings the pruned count closer to `target`
(exactly halfway: the larger count, as `pruned_count` and `structure.pruned_units` round).

    Ties are broken by group index (stable sort) so the result is deterministic; one group always survives
    (a fully pruned layer disconnects the network, which tfmot issue #215 hit near 100 %).
    """
    order = np.argsort(scores, kind="stable")
    cumulative = np.concatenate([[0], np.cumsum(sizes[order])])
    distance = np.abs(cumulative - target)
    count = len(distance) - 1 - int(np.argmin(distance[::-1]))  # halfway: the larger count, as pruned_count
    count = min(count, len(scores) - 1)
    pruned = np.zeros(len(scores), bool)
    pruned[order[:count]] = True
    return pruned


def _bracket(values: np.ndarray, k: int) -> tuple[float, float]:
    """(low, high) that hold the k-th smallest of a large flat array unless a sample misled: the band spans
    5 standard errors of the sample's quantile either side. Callers check, and fall back when it missed.

    The sample is every s-th value, for an s without prime factors below 1009 (a prime, for kernels up to
    16 G weights), so that it meets every column of a row-major kernel; a strided read the prefetcher
    follows, where random reads would miss the cache at every sample."""
    stride = max(1, values.size // 16_384) | 1
    while stride > 1 and any(stride % p == 0 for p in range(3, min(stride, 1009), 2)):
        stride += 2
    sample = values[k % stride::stride]
    share = k / values.size
    margin = 5 * np.sqrt(share * (1 - share) / sample.size) + 1e-3
    ends = (int(max(0.0, share - margin) * (sample.size - 1)), int(np.ceil(min(1.0, share + margin) * (sample.size - 1))))
    low, high = np.partition(sample, ends)[list(ends)]
    return float(low), float(high)


def kth_smallest(values: np.ndarray, k: int) -> tuple[float, int]:
    """(the k-th smallest (1-based) of a flat array, how many values are <= it), exactly, in about two
    passes over the array: masks are recomputed every few steps on millions of weights.

    A sample brackets the answer in a narrow band; elements below the band are only counted and the band
    alone is partitioned. If the band misses (unlucky sample), a full partition gives the same answer.
    Zeros are common (weights pruned earlier) and partitioning millions of ties is slow, so they never are.
    """
    n = values.size
    if n > 100_000:
        low, high = _bracket(values, k)
        low = max(low, np.finfo(values.dtype).tiny)  # zeros are counted below the band, never partitioned
        in_band = values >= low
        below = n - int(np.count_nonzero(in_band))
        if below < k:
            in_band &= values <= high
            band = values[in_band]
            if k - below <= band.size:
                return _select(band, k - below, below)
    zeros = n - int(np.count_nonzero(values))
    if k <= zeros:
        return 0.0, zeros
    return _select(values[values != 0], k - zeros, zeros)


def newly_pruned(magnitudes: np.ndarray, kept: np.ndarray, sparsity: float) -> tuple[np.ndarray, int] | None:
    """(flat indices of the kept weights that unstructured pruning at `sparsity` prunes next, non-zero
    weights the layer keeps after them), given |kernel| and the current mask (bool), both flat. The smallest
    kept magnitudes go, as many as the target adds, ties in index order. None when the mask already prunes
    more than `sparsity` asks (a full recompute, `compute_mask`, may then revive weights; this never does).

    Gradual pruning adds a little at every update, and pruned weights are zero, so the next ones to go
    are the few smallest kept weights: found in about three passes over the kernel, and installed by
    writing those weights alone. The non-zero count comes for free (kept zeros are all candidates), so
    the sparsity log needs no pass of its own.
    """
    _check_sparsity(sparsity)
    count = pruned_count(magnitudes.size, sparsity)
    kept_count = int(np.count_nonzero(kept))
    needed = count - (kept.size - kept_count)
    if needed < 0:
        return None
    if needed == 0:
        return np.empty(0, np.int64), kept_count - int(np.count_nonzero(kept & (magnitudes == 0)))
    candidates = kept
    if magnitudes.size > 100_000:  # pruned weights are zeros: the bracket of the count-th smallest holds them
        candidates = kept & (magnitudes <= _bracket(magnitudes, count)[1])
    indices = np.flatnonzero(candidates)
    if indices.size < needed:  # the bracket missed: every kept weight is a candidate
        indices = np.flatnonzero(kept)
    values = magnitudes[indices]
    threshold = np.partition(values, needed - 1)[needed - 1]
    pruned = values < threshold
    tied = np.flatnonzero(values == threshold)  # the first in index order go, as in compute_mask
    pruned[tied[:needed - np.count_nonzero(pruned)]] = True
    kept_zeros = int(np.count_nonzero(values[~pruned] == 0))  # every kept zero is <= the bracket's top
    return indices[pruned], kept_count - needed - kept_zeros


def _select(values: np.ndarray, k: int, offset: int) -> tuple[float, int]:
    """kth_smallest within `values`, which `offset` smaller elements precede."""
    part = np.partition(values, k - 1)
    kth = part[k - 1]
    return float(kth), offset + k + int(np.count_nonzero(part[k:] == kth))


def pruned_count(size: int, sparsity: float) -> int:
    """Weights an unstructured mask prunes: the nearest count, one weight always kept."""
    return min(int(sparsity * size + 0.5), size - 1)


def magnitude_threshold(magnitudes: np.ndarray, sparsity: float) -> tuple[float, int]:
    """(t, surplus) for |kernel| given flat: pruning every magnitude <= t prunes the exact count
    `sparsity` asks for plus `surplus` weights tied at t. When surplus is 0, `|kernel| > t` is the whole
    unstructured mask."""
    _check_sparsity(sparsity)
    count = pruned_count(magnitudes.size, sparsity)
    if count == 0:
        return -1.0, 0
    threshold, at_or_below = kth_smallest(magnitudes, count)
    return threshold, at_or_below - count


def _unstructured_keep(kernel: np.ndarray, sparsity: float) -> np.ndarray:
    """Exact magnitude mask without a sort: threshold by selection, then weights tied at the threshold
    pruned in index order up to the exact count."""
    flat = magnitudes(kernel).ravel()
    threshold, surplus = magnitude_threshold(flat, sparsity)
    keep = flat > threshold
    if surplus:
        keep[np.flatnonzero(flat == threshold)[-surplus:]] = True
    return keep.reshape(kernel.shape)


def nm_keep(kernel: np.ndarray, sparsity: float, n: int, m: int) -> np.ndarray:
    """N:M along the input axis: in every window of m consecutive inputs of an output, at most m - n are pruned.

    Gradual N:M: the m - n smallest of each window are the candidates, and the globally smallest
    `sparsity * size` candidates are pruned, so the mask reaches exact N:M at sparsity (m - n) / m.
    """
    kernel = _check_kernel(kernel)
    _check_sparsity(sparsity)
    rows, cols = kernel.shape
    if rows % m:
        raise TfpruneError(f"N:M needs the kernel's input size divisible by m; got inputs={rows}, m={m}")
    if sparsity > (m - n) / m + 1e-9:
        raise TfpruneError(f"sparsity {sparsity} exceeds what {n}:{m} allows ({(m - n) / m:g})")
    windows = magnitudes(kernel).reshape(rows // m, m, cols)
    rank = np.argsort(np.argsort(windows, axis=1, kind="stable"), axis=1, kind="stable")
    candidate = rank < (m - n)
    count = int(sparsity * kernel.size + 0.5)
    keep = np.ones(kernel.size, bool)
    if count:  # candidates first, then by magnitude (an inf candidate still goes before every non-candidate)
        keep[np.lexsort((windows.ravel(), ~candidate.ravel()))[:count]] = False
    return keep.reshape(kernel.shape)


def compute_mask(kernel: np.ndarray, sparsity: float, pattern: Pattern | str = "unstructured",
                 spatial: tuple = ()) -> np.ndarray:
    """The mask that prunes one 2-D kernel to `sparsity` with `pattern` (layer-wise ranking).

    Args:
        kernel: rows x units (a layer's weight through `registry.view(layer).to_2d`).
        sparsity: fraction of the elements to prune, in [0, 1); the count is the nearest one the pattern's
            groups allow, and at least one group is kept.
        pattern: a `Pattern` or a pattern name ("set": its best candidate, `choose_pattern`).
        spatial: a convolution's kernel window (`registry.View.spatial`), for "channel", "connectivity" and
            "kernel"; () for a Dense.
    Returns:
        A boolean array of the kernel's shape, True where a weight stays (a quarter of the bytes of a float
        mask, handed to TensorFlow every few steps).
    Raises:
        TfpruneError: a sparsity outside [0, 1), a kernel that is not 2-D, an N:M pattern the kernel's rows do
            not divide or a sparsity it cannot reach.
    """
    pattern = as_pattern(pattern)
    kernel = _check_kernel(kernel)
    _check_sparsity(sparsity)
    if pattern.name == "nm":
        return nm_keep(kernel, sparsity, pattern.n, pattern.m)
    if pattern.name == "unstructured":
        return _unstructured_keep(kernel, sparsity)
    if pattern.name == "kernel":
        return kernel_pattern_keep(kernel, sparsity, spatial, pattern.entries)
    if pattern.name == "set":
        return choose_pattern(kernel, sparsity, pattern.candidates, spatial)[1]
    ids, scores, sizes = groups(kernel, pattern, spatial)
    return ~choose_pruned(scores, sizes, sparsity * kernel.size)[ids]


def applicable(pattern: Pattern, shape_2d: tuple, spatial: tuple, sparsity: float = 0.0) -> str | None:
    """Why `pattern` cannot prune a kernel of this 2-D shape and window to `sparsity`, or None if it can."""
    rows, units = shape_2d
    if pattern.name == "nm" and rows % pattern.m:
        return f"{pattern.n}:{pattern.m} needs rows ({rows}) divisible by m={pattern.m}"
    if pattern.name == "nm" and sparsity > (pattern.m - pattern.n) / pattern.m + 1e-9:
        return f"sparsity {sparsity:g} exceeds what {pattern.n}:{pattern.m} allows ({(pattern.m - pattern.n) / pattern.m:g})"
    if pattern.name == "block" and pattern.block_size > min(rows, units):
        return f"block_size {pattern.block_size} is larger than the 2-D view ({rows} x {units})"
    if pattern.name == "kernel":
        if len(spatial) not in (1, 2):
            return "kernel patterns need a convolution's kernel window"
        if pattern.entries >= positions(spatial):
            return f"a kernel pattern of {pattern.entries} entries leaves nothing to prune in a {tuple(spatial)} window"
    return None


def choose_pattern(kernel: np.ndarray, sparsity: float, candidates, spatial: tuple = ()) -> tuple[int, np.ndarray]:
    """(index of the chosen candidate, its mask): among the candidate patterns (specs or Patterns) that apply
    to this kernel, the one whose mask at `sparsity` keeps the largest L2 norm of the weights (the first on a
    tie). Unstructured, if listed, always wins: no mask of a given count keeps more.

    Raises:
        TfpruneError: no candidate applies to the kernel.
    """
    kernel = _check_kernel(kernel)
    best, best_mask, best_norm = None, None, -1.0
    for index, candidate in enumerate(candidates):
        pattern = candidate if isinstance(candidate, Pattern) else parse_spec(candidate)
        if applicable(pattern, kernel.shape, spatial, sparsity) is not None:
            continue
        mask = compute_mask(kernel, sparsity, pattern, spatial)
        norm = float(np.sum(np.square(kernel[mask], dtype=np.float64)))
        if norm > best_norm:
            best, best_mask, best_norm = index, mask, norm
    if best is None:
        raise TfpruneError(f"no pattern of {list(candidates)} applies to a {kernel.shape[0]} x {kernel.shape[1]} "
                           f"kernel with window {tuple(spatial)} at sparsity {sparsity:g}")
    return best, best_mask


def compute_global_masks(kernels: list[np.ndarray], sparsity: float, pattern: Pattern | str = "unstructured",
                         spatials: list[tuple] | None = None) -> list[np.ndarray]:
    """Masks from one ranking across all kernels: layers with small weights give up more than the average.

    Scores are compared as they are (no per-layer normalisation), which is what global magnitude pruning
    means; each kernel still keeps at least one group.

    Args:
        kernels: 2-D views (rows x units).
        sparsity: fraction of all their elements together to prune, in [0, 1).
        pattern: any pattern with groups: not "nm" (its structure is per window), "kernel" or "set" (chosen
            per kernel).
        spatials: each kernel's window (`compute_mask`'s `spatial`), for "channel" and "connectivity".
    Returns:
        One boolean keep-mask per kernel.
    Raises:
        TfpruneError: such a pattern, a sparsity outside [0, 1), a kernel that is not 2-D.
    """
    pattern = as_pattern(pattern)
    _check_sparsity(sparsity)
    if pattern.name in ("nm", "kernel", "set"):
        raise TfpruneError(f"global ranking does not apply to the {pattern.name} pattern (its structure is chosen per "
                           "window or per kernel); use layer-wise")
    spatials = spatials or [()] * len(kernels)
    parts = [groups(_check_kernel(k), pattern, w) for k, w in zip(kernels, spatials)]
    scores = np.concatenate([p[1] for p in parts])
    sizes = np.concatenate([p[2] for p in parts])
    total = sum(np.asarray(k).size for k in kernels)
    pruned = choose_pruned(scores, sizes, sparsity * total)
    masks, offset = [], 0
    for ids, group_scores, _ in parts:
        own = pruned[offset:offset + len(group_scores)].copy()
        offset += len(group_scores)
        if own.all():  # keep the best group of a layer the ranking would empty
            own[np.argmax(group_scores)] = False
        masks.append(~own[ids])
    return masks

