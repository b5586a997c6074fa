"""One run per directory: an advisory lock (fcntl.flock on <output_dir>/.lock) held for the whole run.

The kernel drops a flock when its holder dies, so a killed run never blocks the next one; the PID
written in the file only names the holder in messages, and a PID left by a dead process is reported
as a stale lock taken over. A second live run on the same directory stops at once with exit code 2.
"""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from genpref.errors import UserError

LOCK_FILE = ".lock"
EXIT_LOCKED = 2  # the same code as a config problem: the command as typed cannot run


class RunLocked(UserError):
    """Another live process holds the run directory."""

    exit_code = EXIT_LOCKED


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _is_main_rank() -> bool:
    """Rank 0 (or a plain process): launchers (accelerate, torchrun) set RANK for every worker."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def hold(run_dir: str | Path, say=print):
    """Lock `run_dir` (created if needed) for the duration of the block; only the main rank locks.
    RunLocked naming the holder's PID when another live run holds it."""
    if not _is_main_rank():
        yield
        return
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except (NotADirectoryError, FileExistsError):
        raise UserError(f"train.output_dir: {run_dir} is not a directory") from None
    except OSError as err:
        raise UserError(f"train.output_dir: cannot create the run directory {run_dir} ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_pid(fd)
            who = f"process {holder}" if holder else "another process"
            raise RunLocked(f"{run_dir} is in use by {who} (another genpref train on the same train.output_dir); "
                            "wait for it to finish or choose another train.output_dir") from None
        previous = _read_pid(fd)
        if previous is not None and previous != os.getpid() and not _alive(previous):
            say(f"taking over the stale lock of process {previous} (no longer running) on {run_dir}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no PID behind
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
