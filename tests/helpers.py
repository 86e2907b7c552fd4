"""What several test modules share: the repository root, running the CLIs, the one-line error contract."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


def run(*args, env=None, timeout=300):
    """A Python command (script or -m module) from the repository root, output captured."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=environment)


def assert_one_line_error(result, *fragments):
    """Exit code 2, exactly one `error:` line holding every fragment, no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def mrpc_source_dir():
    """The real MRPC (GLUE_DIR or the shared folder beside the checkout), or None."""
    for candidate in (os.path.join(os.environ.get("GLUE_DIR", ""), "MRPC"),
                      os.path.join(ROOT, "..", "shared", "data", "glue", "MRPC")):
        if os.path.isfile(os.path.join(candidate, "train.tsv")):
            return candidate
    return None
