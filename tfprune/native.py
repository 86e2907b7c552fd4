"""The compiled ops (`csrc/prune_ops.cc`): the gradual mask update and the masked optimizer update. Without
them `PruningStep` uses numpy and XLA, and `kernel_mask` plain TensorFlow ops: the same weights, slower.

    python3 -c "from tfprune import native; native.build()"   # now (setup.sh does); else at first use

The library lives in a cache, never in the source tree: $TFPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/tfprune,
else ~/.cache/tfprune, in a folder named by the TensorFlow version and a hash of the source and the compile
flags, so another TensorFlow or an edited source gets its own build (never judged by file times). A build
needs g++ and the headers the TensorFlow wheel ships (~10 s); a failed build says why in a warning and the
fallbacks take over. `TFPRUNE_NATIVE=0` turns both ops off.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import tensorflow as tf

SOURCE = Path(__file__).with_name("csrc") / "prune_ops.cc"
_loaded: list = []


class BuildError(RuntimeError):
    """The ops could not be compiled (no g++, or the compiler failed); the message says why."""


def _flags() -> list[str]:
    return ["-std=c++17", "-shared", "-O3", "-fPIC", "-w", *tf.sysconfig.get_compile_flags(),
            *tf.sysconfig.get_link_flags()]


def cache_dir() -> Path:
    if os.environ.get("TFPRUNE_CACHE_DIR"):
        return Path(os.environ["TFPRUNE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tfprune"


def library_path() -> Path:
    """Where the library for this TensorFlow and this source is (or will be) built."""
    digest = hashlib.sha256(SOURCE.read_bytes() + "\0".join(_flags()).encode()).hexdigest()[:16]
    return cache_dir() / f"tf{tf.__version__}-{digest}" / "prune_ops.so"


def build(force: bool = False) -> Path:
    """Compile the ops for the installed TensorFlow into the cache (unless there already); returns the path.

    Raises:
        BuildError: g++ missing or the compilation failed (the compiler's last lines in the message).
    """
    library = library_path()
    if library.exists() and not force:
        return library
    compiler = shutil.which("g++")
    if compiler is None:
        raise BuildError("g++ not found (apt-get install g++)")
    library.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so.partial", dir=library.parent)
    os.close(handle)
    try:
        result = subprocess.run([compiler, str(SOURCE), "-o", partial, *_flags()], capture_output=True, text=True)
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise BuildError(f"g++ failed with exit code {result.returncode}: {tail}")
        os.replace(partial, library)  # never a half-written library where ops() looks
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    _loaded.clear()
    return library


def ops():
    """The loaded ops module, or None: turned off with TFPRUNE_NATIVE=0, or not buildable here, or not
    loadable (each of the last two with a warning that says why). Builds on first use when missing."""
    if not _loaded:
        _loaded.append(_load())
    return _loaded[0]


def _load():
    if os.environ.get("TFPRUNE_NATIVE", "1") == "0":
        return None
    try:
        library = build()
    except (BuildError, OSError) as error:
        warnings.warn(f"tfprune's compiled ops are not available ({error}); using the slower fallbacks", stacklevel=3)
        return None
    try:
        return tf.load_op_library(str(library))
    except (tf.errors.NotFoundError, OSError) as error:
        warnings.warn(f"cannot load {library} ({error}); using the slower fallbacks", stacklevel=3)
        return None
