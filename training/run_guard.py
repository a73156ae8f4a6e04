"""Operator-fault guards of a training run: one run per output folder, and no training child outliving its launcher.

Kept free of torch so the guards are cheap to import and to test in a subprocess.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import sys
from pathlib import Path

LOCK_NAME = ".lock"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class OutputDirLock:
    """An exclusive `fcntl.flock` on `output_dir/.lock`, held while the object lives (the kernel drops it when the
    process dies, so a killed run never leaves a stale lock). The file records the holder's pid for the error."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RuntimeError(
                    f"output_dir {str(self.path.parent)!r} is in use by another training run (pid {holder}); "
                    "wait for it, stop it, or choose another output_dir"
                ) from None
            raise
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send `sig` to this process when its parent dies (Linux `prctl(PR_SET_PDEATHSIG)`).

    `accelerate launch` runs the script as a child process (`subprocess.Popen`, on one CPU process as on many), and
    a SIGKILL of the launcher alone leaves that child training and writing the output folder. With the death signal
    set the child is stopped by the kernel the moment the launcher goes, with no polling in the training loop. If the
    parent died before the call, stop now. Returns False where prctl is unavailable (not Linux): nothing is set.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent went between getppid and prctl: nothing will signal us
        os.kill(os.getpid(), sig)
    return True


__all__ = ["LOCK_NAME", "OutputDirLock", "stop_with_parent"]
