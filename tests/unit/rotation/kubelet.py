"""How the kubelet updates a mounted Secret (its AtomicWriter), for tests: every key is a file
reached through the `..data` symlink, which is swapped in one rename to a new timestamped
directory; the links of removed keys go. A reader never sees half of an update."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


def write(directory: Path, files: Mapping[str, str]) -> None:
    """Make `directory` hold exactly `files` (name -> content), the way the kubelet does."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir(mode=0o700)
    for name, content in files.items():
        (stamp / name).write_text(content)
        (stamp / name).chmod(0o440)
    previous = os.readlink(directory / DATA) if (directory / DATA).is_symlink() else None
    temporary = directory / "..data_tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(stamp.name)
    os.replace(temporary, directory / DATA)
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"{DATA}/{name}")
    for entry in directory.iterdir():
        if not entry.name.startswith(".") and entry.name not in files:
            entry.unlink()
    if previous is not None:
        shutil.rmtree(directory / previous, ignore_errors=True)
