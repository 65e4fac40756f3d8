"""Publishing a finished local pyramid: OUT holds the old or the new one at every instant."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

__all__ = ["publish_local"]


def _renameat2_exchange(old: Path, new: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = func(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), rename_exchange)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(new))


def publish_local(partial: Path, out: Path) -> None:
    """Make ``partial`` appear at ``out``: OUT holds the old or the new pyramid at every instant."""
    if out.exists() and _renameat2_exchange(partial, out):
        shutil.rmtree(partial)  # now the old pyramid
        return
    if out.exists():
        aside = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.rename(out, aside)
        os.rename(partial, out)
        shutil.rmtree(aside)
        return
    os.rename(partial, out)
