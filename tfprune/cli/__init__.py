"""The command-line front doors (one module per command) and their shared plumbing: user errors become
one line and exit code 2, bugs keep their traceback, outputs appear whole or not at all."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
import warnings

from tfprune._keras import start_devices_quietly

start_devices_quietly()  # the commands' users see their own lines, not TensorFlow's start-up

from tfprune.errors import TfpruneError  # noqa: E402
from tfprune.report import markdown_table, write_json  # noqa: E402,F401  (re-exported for the commands)

# Problems a user causes and can fix. Any other exception is a bug and keeps its traceback.
# OSError covers the rest of the file system's refusals: a full disk, a read-only one.
USER_ERRORS = (TfpruneError, OSError)


class UsageError(TfpruneError):
    """A bad command-line value: reported as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line (`prog: error: ...`), not the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def run(main, argv=None) -> int:
    """Call `main(argv)`: a user error (USER_ERRORS) becomes one stderr line and exit code 2; warnings are
    one `warning:` line each; anything else propagates with its traceback."""
    prog = os.path.basename(sys.argv[0])
    warnings.formatwarning = _one_line_warning
    try:
        main(argv)
    except USER_ERRORS as error:
        message = str(error) or error.__class__.__name__
        if isinstance(error, OSError) and error.filename and str(error.filename) not in message:
            message = f"{error.filename}: {message}"
        print(f"{prog}: error: {message.splitlines()[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def add_image_data_arguments(parser) -> None:
    """The data flags of the image commands: --dataset, --data-dir, --max-train-samples, --max-test-samples
    (the last two checked with `require_positive`)."""
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (default) or mnist")
    parser.add_argument("--data-dir", help="folder with the four IDX files (gz or not); default: Debian's "
                        "/usr/share/datasets/fashion-mnist, then Keras' downloader")
    parser.add_argument("--max-train-samples", type=int, help="use only the first N training images (quick runs)")
    parser.add_argument("--max-test-samples", type=int, help="use only the first N test images (quick runs)")


def require_positive(args, *names: str) -> None:
    """A UsageError naming the first of `names` (argparse dests) whose value is below 1 (None, an optional
    flag not given, passes)."""
    for name in names:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def check_distillation_knobs(args) -> None:
    """--distill-alpha and --temperature (the distilling commands' shared flags) within what
    tfprune.distillation.distillation_loss accepts, named as flags before anything is loaded."""
    if not 0.0 <= args.distill_alpha <= 1.0:
        raise UsageError(f"--distill-alpha must be in [0, 1], got {args.distill_alpha}")
    if not 0.0 < args.temperature < float("inf"):
        raise UsageError(f"--temperature must be a finite number > 0, got {args.temperature}")


def check_admm_knobs(args) -> None:
    """--admm-rho, --admm-rho-growth and --admm-rho-max (the ADMM commands' shared flags) within what
    tfprune.admm.ADMM accepts, named as flags before anything is loaded."""
    for name in ("admm_rho", "admm_rho_max"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
    if not (math.isfinite(args.admm_rho_growth) and args.admm_rho_growth >= 1):
        raise UsageError(f"--admm-rho-growth must be a finite number >= 1, got {args.admm_rho_growth}")
    if args.admm_rho > args.admm_rho_max:
        raise UsageError(f"--admm-rho ({args.admm_rho:g}) must not exceed --admm-rho-max ({args.admm_rho_max:g})")


def comma_separated(text: str, convert, message: str) -> list:
    """convert(part) for every non-empty part of a comma-separated flag value; UsageError(message) when a
    part does not convert."""
    try:
        return [convert(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(message) from None


def sparsity_arg(text: str) -> float:
    """argparse type for a sparsity in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {text}")
    return value


@contextlib.contextmanager
def claim_output_dir(final_dir: str):
    """Hold `final_dir` for this run, from before anything is loaded to the end: it must not be a file, its
    parent must be writable, and no other run may hold it (a lock file beside it, removed at the end). If
    the run fails (a user error or a bug), everything it created there goes; an interrupted run (Ctrl-C,
    or killed) keeps its checkpoints for --resume."""
    import fcntl

    final_dir = os.path.abspath(final_dir)
    if os.path.exists(final_dir) and not os.path.isdir(final_dir):
        raise UsageError(f"output directory {final_dir} is a file")
    created = final_dir if not os.path.exists(final_dir) else None
    parent = os.path.dirname(final_dir)
    while created and not os.path.exists(os.path.dirname(created)):
        created = os.path.dirname(created)  # the first ancestor this run creates
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the output directory's parent {parent} ({error.strerror})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write into {parent}, where the output directory {final_dir} goes")
    lock_path = os.path.join(parent, f".{os.path.basename(final_dir)}.lock")
    lock = open(lock_path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UsageError(f"output directory {final_dir} is in use by another run") from None
    for name in os.listdir(parent):  # what a killed run into this directory left staged
        if name.startswith(_staging_prefix(final_dir)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    failed = False
    try:
        yield final_dir
    except KeyboardInterrupt:
        raise
    except BaseException:
        failed = True
        if created:
            shutil.rmtree(final_dir, ignore_errors=True)
        raise
    finally:
        os.remove(lock_path)
        lock.close()
        if failed and created:  # the parents it made, unless another run has put something there since
            path = os.path.dirname(final_dir)
            try:
                while len(path) >= len(created) and not os.listdir(path):
                    os.rmdir(path)
                    path = os.path.dirname(path)
            except OSError:  # gone, or being written into, meanwhile
                pass


def _staging_prefix(final_dir: str) -> str:
    return f".{os.path.basename(os.path.abspath(final_dir))}.staging-"


@contextlib.contextmanager
def atomic_output_dir(final_dir: str):
    """Yield a fresh staging folder beside `final_dir`; on success its files replace those in `final_dir`,
    on error it is removed, so a failed run never leaves half-written results. (Streams that must outlive a
    failed run, checkpoints for --resume and TensorBoard events, are written to `final_dir` directly.)"""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=_staging_prefix(final_dir), dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _move_in(staging, final_dir)
    shutil.rmtree(staging, ignore_errors=True)


def _move_in(staging: str, final_dir: str) -> None:
    os.makedirs(final_dir, exist_ok=True)
    for name in os.listdir(staging):
        target = os.path.join(final_dir, name)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
        os.replace(os.path.join(staging, name), target)


class Stopwatch:
    """Seconds since it was made."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
