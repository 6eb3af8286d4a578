"""Atomic file writes: a temporary sibling written in full, then renamed onto the target.

A killed process leaves either the old file or the new one, never half of one (``os.replace`` is atomic
within one file system). Every writer of a file another process may read while it is written (run
records, reports, FITS products, label records) goes through here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "write_text_atomic"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = True) -> Path:
    """Call ``write(tmp)`` for a temporary path next to ``path``, then rename it onto ``path``.

    The temporary name keeps the file's suffix (``.fits.gz``, ``.parquet``), so writers that choose the
    format from the name still do. Returns ``path``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: file exists and overwrite=False")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
