"""Child processes that die with the process that started them, even when it is SIGKILLed."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

__all__ = ["spawn"]

_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child between fork and exec: when the parent dies, the kernel sends
        # the child SIGTERM, so it stops in order instead of living on as a stray. A parent
        # that died before this line ran is caught by the check after it.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


if sys.platform == "linux":
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
else:  # pragma: no cover

    def _prctl(*_: Any) -> int:
        return 0


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: os.PathLike[str] | str | None = None,
    output: IO[bytes] | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `args` as a child that gets SIGTERM when this process dies.

    A plain Popen: it returns as soon as the child is forked, and unlike the asyncio
    variants it takes preexec_fn on every event loop.
    """
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        start_new_session=new_session,
        preexec_fn=_die_with(os.getpid()),
    )
