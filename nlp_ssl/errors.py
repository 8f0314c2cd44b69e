"""User-facing errors.

A :class:`UserError` is something the user can fix (a bad path, a malformed config key, an unknown task).
Entry points print its message on one line and exit with status 2, without a traceback; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


def exit_on_user_error(fn: F) -> F:
    """Decorate an entry point so that a :class:`UserError` becomes ``error: <message>`` and exit code 2, and
    Ctrl-C outside the training loop (which checkpoints instead) a short line and exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (whitespace collapsed, cut at ``limit``), for a one-line error."""
    return (" ".join(str(err).split()) or type(err).__name__)[:limit]
