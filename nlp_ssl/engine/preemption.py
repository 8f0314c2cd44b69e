"""Preemption: SIGTERM and Ctrl-C end a run at a step boundary with a checkpoint, not mid-write.

Shared clusters stop jobs with SIGTERM (then SIGKILL after a grace period); users press Ctrl-C. Either way
the engine finishes the current step, writes a checkpoint and exits with :data:`RESUMABLE_EXIT`, and the
same command resumes. A second Ctrl-C stops at once (the last checkpoint stays valid: checkpoints are
atomic).

``accelerate launch`` with one process runs the training script as a child and does not forward SIGTERM
to it; the child asks the kernel to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a
stopped launcher never leaves an orphan writing into ``output_dir``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from types import FrameType

#: Exit status of a run stopped by a signal after its checkpoint: "temporary failure, retry" (sysexits.h).
RESUMABLE_EXIT = 75
_PR_SET_PDEATHSIG = 1


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the training loop reads at step boundaries."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> StopRequest:
        """Install the handlers (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            # A second Ctrl-C: the user wants out now; checkpoints on disk are complete or absent.
            raise KeyboardInterrupt  # the entry point turns it into one line and exit status 130
        self.signal_name = name
        print(f"\n{name} received: finishing this step, writing a checkpoint, then stopping "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


def die_with_launcher() -> bool:
    """Under a launcher, get SIGTERM when the launcher process dies (Linux); True if set."""
    launched = "LOCAL_RANK" in os.environ or any(k.startswith("ACCELERATE_") for k in os.environ)
    if not launched or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
