"""Atomic file writes: a temp file in the same folder, flushed and fsynced, then renamed over the target.

A crash, a full disk or an exception while writing never leaves a half-written file under the real name, and
whatever was there before stays until the new file is complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "wb",
    *,
    perms: int = 0o644,
    before_replace: Callable[[Path], None] | None = None,
    fsync_dir: bool = False,
) -> Iterator[IO[Any]]:
    """Yield an open temp file; on a clean exit it replaces ``path``, on any exception it is removed.

    ``before_replace(tmp_path)`` may check the finished temp file and raise to keep the old file;
    ``fsync_dir`` also syncs the folder so the rename itself survives a power cut.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    tmp = Path(name)
    try:
        os.chmod(tmp, perms)  # mkstemp makes 0600; what kickit writes is meant to be shared
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync_dir:
        try:  # POSIX only; elsewhere the rename is as durable as the OS makes it
            dfd = os.open(p.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
