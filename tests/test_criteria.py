import numpy as np
import pytest

from tfprune import TfpruneError, criteria
from tfprune.criteria import (
    Pattern,
    compute_global_masks,
    compute_mask,
    kth_smallest,
    newly_pruned,
    parse_nm,
)


def zeros(mask):
    return int(mask.size - np.count_nonzero(mask))


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.7, 0.9, 0.97, 0.99])
def test_unstructured_exact_count_and_smallest_pruned(sparsity, rng):
    kernel = rng.standard_normal((300, 170)).astype(np.float32)
    mask = compute_mask(kernel, sparsity)
    assert zeros(mask) == round(sparsity * kernel.size)
    if 0 < sparsity:
        assert np.abs(kernel[mask == 0]).max() <= np.abs(kernel[mask == 1]).min()


def test_unstructured_large_kernel_with_ties_and_zeros_is_exact(rng):
    kernel = rng.standard_normal((800, 400)).astype(np.float32)
    kernel[rng.random(kernel.shape) < 0.6] = 0.0  # pruned earlier: many ties at zero
    kernel[:5, :5] = 0.25  # ties away from zero
    for sparsity in (0.3, 0.6, 0.75, 0.9):
        assert zeros(compute_mask(kernel, sparsity)) == round(sparsity * kernel.size)
    flat = np.abs(kernel).ravel()
    ordered = np.sort(flat)
    for k in (1, 1000, 200_000, 250_000, flat.size):
        assert kth_smallest(flat, k) == (ordered[k - 1], np.count_nonzero(flat <= ordered[k - 1]))


@pytest.mark.parametrize("shape", [(40, 25), (800, 500)])  # below and above the sampled bracket's size
def test_newly_pruned_adds_what_compute_mask_would_prune(shape, monkeypatch, rng):
    kernel = rng.standard_normal(shape).astype(np.float32)
    kept = compute_mask(kernel, 0.3)
    kernel[~kept] = 0.0  # pruned weights are zeros
    kernel += 0.01 * rng.standard_normal(shape).astype(np.float32) * kept  # a few training steps later
    kernel[kept & (np.abs(kernel) < 0.5)] = np.float32(0.45) * np.sign(kernel[kept & (np.abs(kernel) < 0.5)])
    magnitudes = np.abs(kernel).ravel()  # many ties at 0.45, right at the 0.35 threshold
    magnitudes[np.flatnonzero(kept)[-3:]] = 0.0  # kept weights that are zero count as pruned-first
    after = compute_mask(magnitudes.reshape(shape), 0.35).ravel()
    expected = np.flatnonzero(kept.ravel() & ~after)
    nonzero = np.count_nonzero(after & (magnitudes != 0))
    indices, left = newly_pruned(magnitudes, kept.ravel(), 0.35)
    np.testing.assert_array_equal(indices, expected)
    assert left == nonzero and len(expected) == round(0.35 * kernel.size) - round(0.3 * kernel.size)
    monkeypatch.setattr(criteria, "_bracket", lambda values, k: (0.0, 1e-9))  # a sample that misled
    indices, left = newly_pruned(magnitudes, kept.ravel(), 0.35)
    np.testing.assert_array_equal(indices, expected)
    assert left == nonzero


def test_newly_pruned_never_revives_and_leaves_sparser_masks_to_compute_mask():
    magnitudes = np.array([0.0, 5.0, 0.1, 0.2, 3.0, 4.0], np.float32)
    kept = np.array([True, False, True, True, True, True])  # weight 1 pruned earlier, weight 0 kept at zero
    indices, left = newly_pruned(magnitudes, kept, 0.5)
    np.testing.assert_array_equal(indices, [0, 2])  # 3 pruned: 1 stays, 0 and 2 go
    assert left == 3
    indices, left = newly_pruned(magnitudes, kept, 1 / 6)
    assert indices.size == 0 and left == 4  # nothing to add; weight 0 is kept but zero
    assert newly_pruned(magnitudes, kept, 0.0) is None  # the mask prunes more than asked


def test_unstructured_keeps_at_least_one_weight():
    assert zeros(compute_mask(np.ones((3, 3), np.float32), 0.999)) == 8


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_unit_prunes_whole_output_columns_with_lowest_l2(sparsity, rng):
    kernel = rng.standard_normal((64, 40)).astype(np.float32)
    mask = compute_mask(kernel, sparsity, "unit")
    dead = np.flatnonzero(mask.sum(axis=0) == 0)
    assert len(dead) == round(sparsity * 40)
    assert set(np.unique(mask.sum(axis=0))) <= {0.0, 64.0}  # whole columns only
    norms = np.linalg.norm(kernel, axis=0)
    alive = np.setdiff1d(np.arange(40), dead)
    assert norms[dead].max() <= norms[alive].min()


def test_row_prunes_whole_input_rows(rng):
    kernel = rng.standard_normal((50, 30)).astype(np.float32)
    mask = compute_mask(kernel, 0.4, "row")
    assert set(np.unique(mask.sum(axis=1))) == {0.0, 30.0}
    assert int((mask.sum(axis=1) == 0).sum()) == 20


@pytest.mark.parametrize("block", [2, 4, 8])
def test_block_zeroes_whole_blocks(block, rng):
    kernel = rng.standard_normal((64, 48)).astype(np.float32)
    mask = compute_mask(kernel, 0.5, Pattern("block", block_size=block))
    blocks = mask.reshape(64 // block, block, 48 // block, block).sum(axis=(1, 3))
    assert set(np.unique(blocks)) == {0.0, float(block * block)}
    assert zeros(mask) == round(0.5 * kernel.size / block**2) * block**2


def test_block_handles_shapes_not_divisible(rng):
    kernel = rng.standard_normal((30, 21)).astype(np.float32)  # 4x4 blocks: edge blocks of 2 rows / 1 column
    mask = compute_mask(kernel, 0.5, Pattern("block", block_size=4))
    ids = (np.arange(30) // 4)[:, None] * 6 + (np.arange(21) // 4)[None, :]
    for block_id in np.unique(ids):
        values = mask[ids == block_id]
        assert values.min() == values.max()  # every block all kept or all pruned
    assert abs(zeros(mask) - 0.5 * kernel.size) <= 16  # within one block of the target


def test_nm_two_four_exact_structure(rng):
    kernel = rng.standard_normal((16, 10)).astype(np.float32)
    mask = compute_mask(kernel, 0.5, Pattern("nm", n=2, m=4))
    windows = mask.reshape(4, 4, 10)
    assert (windows.sum(axis=1) == 2).all()
    magnitudes = np.abs(kernel).reshape(4, 4, 10)
    assert (np.where(windows == 0, magnitudes, -np.inf).max(axis=1) <= np.where(windows == 1, magnitudes, np.inf).min(axis=1)).all()


def test_nm_gradual_is_exact_and_never_breaks_structure(rng):
    kernel = rng.standard_normal((32, 8)).astype(np.float32)
    mask = compute_mask(kernel, 0.25, Pattern("nm"))
    assert zeros(mask) == 64
    assert (mask.reshape(8, 4, 8).sum(axis=1) >= 2).all()


def test_global_ranking_prunes_small_layers_more(rng):
    small = rng.standard_normal((100, 100)).astype(np.float32) * 0.1
    large = rng.standard_normal((100, 100)).astype(np.float32)
    masks = compute_global_masks([small, large], 0.5)
    assert zeros(masks[0]) + zeros(masks[1]) == 10_000
    assert zeros(masks[0]) > 4 * zeros(masks[1])


@pytest.mark.parametrize("call, message", [
    (lambda: compute_mask(np.ones((4, 4)), 1.0), "sparsity must be in \\[0, 1\\)"),
    (lambda: compute_mask(np.ones((4, 4)), -0.5), "sparsity must be in"),
    (lambda: Pattern("diagonal"), "pattern must be one of"),
    (lambda: Pattern("block", block_size=0), "block_size must be a positive integer"),
    (lambda: Pattern("block", block_size=2.5), "block_size must be a positive integer"),
    (lambda: Pattern("nm", n=4, m=4), "N:M needs 1 <= n < m"),
    (lambda: parse_nm("2-4"), "nm must look like N:M"),
    (lambda: compute_mask(np.ones((6, 4)), 0.5, Pattern("nm")), "divisible by m"),
    (lambda: compute_mask(np.ones((8, 4)), 0.8, Pattern("nm")), "exceeds what 2:4 allows"),
    (lambda: compute_global_masks([np.ones((8, 4))], 0.5, Pattern("nm")), "global ranking does not apply"),
])
def test_bad_arguments(call, message):
    with pytest.raises(TfpruneError, match=message):
        call()
