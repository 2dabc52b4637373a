"""Reading users' text files with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file (and line where there is one)."""


def read_text(path: str | Path) -> str:
    """The whole file as text; missing, empty and non-UTF-8 files are errors naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{p}:{line}: invalid UTF-8 (byte {raw[err.start]:#04x} at offset {err.start})") from None
    if not text.strip():
        raise DataError(f"{p}: file is empty")
    return text
