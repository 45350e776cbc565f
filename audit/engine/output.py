"""The run folder (``--out``), checked before any work: a folder that cannot be created is found
in one line at the start, not after the whole matrix has been computed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from audit.errors import UserError


def check_out_folder(out: Path) -> None:
    """Raise :class:`UserError` unless ``out`` is a folder, or can be created as one.

    Creates nothing that stays: where ``out`` does not exist yet, a temporary folder is made and
    removed again in its nearest existing parent (permissions alone do not tell: root may write
    anywhere yet not under ``/proc``; a read-only mount refuses everyone).
    """
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder path (it is created if missing)")
        return
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is a file, so the folder cannot be created; give another path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".explain-audit-", dir=parent))
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create a folder in {parent} ({exc.strerror or exc}); "
                        "give a path you can write") from None
