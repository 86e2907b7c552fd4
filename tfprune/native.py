"""The compiled ops (`csrc/prune_ops.cc`), when they are built: the gradual mask update and the masked
optimizer update. Without them PruningStep uses numpy and XLA, and kernel_mask plain TensorFlow ops.

    python3 -c "from tfprune import native; native.build()"    # setup.sh does this; needs g++

A gradual update prunes the few smallest kept weights of each kernel. In numpy that is ~3 passes over
every kernel and mask, copies, and an XLA call to write the zeros; the op does one pass over each and
writes the zeros where the variables live. The FOR.ai MLP's callback, on 2 cores: 10.2 ms an update
with numpy, 4.4 ms with the op (benchmarks/mlp_overhead.py). The masked update folds the mask into the
optimizer's own pass (kernel_mask.py). `TFPRUNE_NATIVE=0` turns both off.
"""
from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

import tensorflow as tf

SOURCE = Path(__file__).with_name("csrc") / "prune_ops.cc"
LIBRARY = SOURCE.with_suffix(".so")
REBUILD = "python3 -c 'from tfprune import native; native.build()'"
_loaded: list = []


def build() -> Path:
    """Compile the ops against the installed TensorFlow (its wheel ships the headers); returns the library."""
    flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    partial = LIBRARY.with_suffix(".so.partial")
    subprocess.run(["g++", "-std=c++17", "-shared", "-O3", "-fPIC", "-w", str(SOURCE), "-o", str(partial), *flags],
                   check=True)
    partial.replace(LIBRARY)  # never a half-written library where ops() looks
    _loaded.clear()
    return LIBRARY


def ops():
    """The loaded ops module, or None: not built, built from an older source or for another TensorFlow
    (each with a warning), or turned off with TFPRUNE_NATIVE=0."""
    if not _loaded:
        _loaded.append(_load())
    return _loaded[0]


def _load():
    if os.environ.get("TFPRUNE_NATIVE", "1") == "0" or not LIBRARY.exists():
        return None
    if LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
        warnings.warn(f"{LIBRARY} is older than its source; using the fallbacks. Rebuild: {REBUILD}", stacklevel=3)
        return None
    try:
        return tf.load_op_library(str(LIBRARY))
    except (tf.errors.NotFoundError, OSError) as error:  # built against another TensorFlow
        warnings.warn(f"cannot load {LIBRARY} ({error}); using the fallbacks. Rebuild: {REBUILD}", stacklevel=3)
        return None
