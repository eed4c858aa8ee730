"""Reading a run folder's files: only regular files, so a FIFO or a device named like one never blocks a reader.

``runs``, the UI and a running run read files others may have put in a run folder. Opening a FIFO
for reading waits for a writer, forever; so every reader opens without blocking and checks the
file's type before reading.
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
