"""The one error type for problems a user can fix.

`TfpruneError` is a ValueError, so code that already catches ValueError keeps working. Its messages name the
argument and the values it allows, never a command-line flag: the library does not know how it was called.
The command-line front doors turn exactly these (and missing or unreadable files) into one `error:` line;
any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name if it has none), for a one-line report."""
    text = str(getattr(error, "message", None) or error).strip()
    return (text.splitlines() or [type(error).__name__])[0][:limit]


class TfpruneError(ValueError):
    """A bad argument, an unusable file or a combination tfprune cannot honour: fixable by the caller."""


class NonFiniteWeightsError(TfpruneError):
    """Weights became NaN or inf (a diverged run): masks cannot be ranked from them. The message names the
    tensors and the step."""
