"""Writing output files all at once: a temporary file beside the target, then a rename.

"Beside" means in the folder the operating system resolves for the target
(symbolic links in its folder part followed), so the rename stays in that
folder and on its file system. A target that is a device, a pipe or a socket
(``/dev/stdout``, ``/dev/full``, a FIFO) is never renamed onto: the callers
write it in place (:func:`is_special`).
"""

from __future__ import annotations

import errno
import io
import os
import stat
import tempfile
from typing import Any

__all__ = ["is_special", "temp_beside", "text_writer"]


def is_special(path: str | os.PathLike[str]) -> bool:
    """Whether *path* names an existing file that is neither regular nor a folder.

    A device (``/dev/full``, ``/dev/stdout``), a pipe or a socket: writers
    open it in place, since renaming a finished file onto it would replace
    the device itself rather than write to it.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


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
        IsADirectoryError: *path* is a folder.
        OSError: the folder does not exist or cannot be written, or *path* is a
            device, a pipe or a socket (see :func:`is_special`).
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        raise IsADirectoryError(errno.EISDIR, "is a folder: name a file in it", name)
    if is_special(name):
        raise OSError(errno.EINVAL, "is a device, a pipe or a socket, not a file", name)
    # The physical folder: the rename onto "link/../out.csv" lands where the
    # system resolves it, and the temporary file must be in that same folder (a
    # lexical abspath may name another folder, on another file system).
    folder = os.path.realpath(os.path.dirname(name) or os.curdir)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(name) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


class _NamedOutput(io.FileIO):
    """A raw output file whose failed writes (a full disk) name the file they failed on."""

    def __init__(self, fd: int, shown: str) -> None:
        super().__init__(fd, "w")
        self._shown = shown

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, self._shown) from None
            raise


def text_writer(fd: int, shown: str, encoding: str) -> io.TextIOWrapper:
    """A text file writing to the descriptor *fd*, as ``open(fd, "w", newline="")`` would.

    A failed write raises :class:`OSError` naming *shown* (the file as the
    user named it): "No space left on device" then says which file.
    """
    return io.TextIOWrapper(io.BufferedWriter(_NamedOutput(fd, shown)), encoding, newline="")
