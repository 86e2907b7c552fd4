"""Compaction: removing dead units physically, so a unit-pruned network becomes a smaller dense one with the
same outputs."""
from __future__ import annotations

import numpy as np


def compact_kernels(kernels: list[np.ndarray]) -> list[np.ndarray]:
    """Remove every hidden unit whose incoming column is all zero, with its outgoing row in the next kernel.

    Exact for ReLU without biases: a dead unit outputs relu(0) = 0 and contributes nothing downstream.
    The first kernel's inputs and the last kernel's outputs are never removed.
    """
    kernels = [np.asarray(k) for k in kernels]
    compact = [kernels[0]]
    for nxt in kernels[1:]:
        alive = np.flatnonzero(np.any(compact[-1] != 0, axis=0))
        if alive.size == 0:  # keep one unit so shapes stay valid
            alive = np.array([0])
        compact[-1] = compact[-1][:, alive]
        compact.append(nxt[alive, :])
    return compact
