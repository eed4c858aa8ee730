"""A run folder's files are regular files: a FIFO or a device named like one never blocks a reader or a writer.

``runs``, the UI and a running run read files others may have put in a run folder. Opening a FIFO
for reading waits for a writer, forever; so every reader opens without blocking and checks the
file's type before reading. A resume writes to the files of an existing run folder, and opening a
FIFO to write waits for a reader: it checks them first (``regular_or_missing``).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotARegularFileError(OSError):
    """A run file that is a FIFO, a device or a folder: not read."""


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file.

    Raises:
        NotARegularFileError: it is a FIFO, a device, a socket or a folder.
        OSError: it cannot be opened (missing, no permission...).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFileError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_text(path: Path) -> str:
    """The UTF-8 text of ``path``, a regular file.

    Raises:
        NotARegularFileError: it is not a regular file.
        OSError: it cannot be read.
        UnicodeDecodeError: it is not UTF-8.
    """
    with open_regular(path) as file:
        return file.read().decode("utf-8")


def regular_or_missing(path: Path) -> bool:
    """Whether ``path`` is a regular file, a symbolic link (not followed) or nothing: not a FIFO, a device, a folder.

    For a writer: opening a FIFO to write to it waits for a reader, forever.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return True
    except OSError:  # a path the system refuses: whoever opens it says why
        return True
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)
