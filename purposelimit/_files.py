"""Writing output files all at once: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile

__all__ = ["temp_beside"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Create a hidden temporary file in *path*'s folder; return its descriptor and name.

    The caller writes it and then ``os.replace``-s it onto *path*, so the
    output appears only once complete and on the same file system. The file
    gets the permissions a plain ``open(path, "w")`` would give (``0o666``
    less the process umask), not :func:`tempfile.mkstemp`'s owner-only ``0o600``.

    Raises:
        OSError: the folder does not exist or cannot be written.
    """
    name = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(name))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(name) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp
