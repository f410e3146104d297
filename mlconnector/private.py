"""Files only the service account can read: 0600 files in 0700 directories.

The audit trail holds raw remote answers (PeopleSoft fault bodies), the webhook spool and the state
name customer records, the WSDL cache describes the ERP's services: none is for other local users.
Modes are set when a file or directory is created (``os.open``/``mkdir`` with a mode, so there is
no moment when the file is readable by others); an existing directory chosen by the admin is left as
it is. On Windows the modes are ignored and the user profile's ACLs apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 (existing directories are not changed)."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is filtered by the umask


def open_private(path: Path, mode: str = "a", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` that creates the file 0600 (and its directory 0700).

    ``O_NOFOLLOW`` refuses a symbolic link planted at the path; an existing file keeps its content
    and is tightened to 0600.
    """
    private_dir(path.parent)
    flags = {"a": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}[mode.replace("b", "")]
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, FILE_MODE)
    try:
        if os.name == "posix":
            os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise
