"""Where a guest's serial console is written, and how Nova reads it back.

Compute writes each instance's console to `<home>/compute/<host>/instances/<uuid>/
console.log` (libvirt's file console, appended across reboots). Nova's API asks the
host over RPC and the host reads the file; novalog's API reads the same file
through the shared $NOVALOG_HOME, the assumption moves and volumes already make
(docs/decisions.md, "Console output").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MAX_CONSOLE_BYTES = 100 * 1024  # Nova's libvirt driver returns at most the last 100 KiB
UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f]")  # what Nova's API removes (keeps \t, \n)


def instances_dir(home: Path, host: str) -> Path:
    return home / "compute" / host / "instances"


def console_log_path(home: Path, host: str, instance_uuid: str) -> Path:
    return instances_dir(home, host) / instance_uuid / "console.log"


def console_output(path: Path, length: int | None) -> str:
    """The last MAX_CONSOLE_BYTES of the log, then its last `length` pieces between
    newlines (Nova's _tail_log, which Tempest counts: a log ending in a newline gives
    one line fewer), without control characters; "" while the file is not there yet."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - MAX_CONSOLE_BYTES))
            text = log.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    if length is not None:  # as Nova: the "" after a final newline counts as a line
        text = "\n".join(text.split("\n")[-length:]) if length else ""
    return UNPRINTABLE.sub("", text)
