"""Parallel text: two files, one sentence a line, line i of one the translation of line i of the other.

What users get wrong is reported with file and line: files of unequal length (which would silently
misalign every later pair), invalid UTF-8, and empty lines (an error, or skipped as a pair by option).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qkv.data.text import BOM, DataError, no_such_file

EmptyPolicy = Literal["error", "skip"]
MAX_LINE_BYTES = 10_000  # a "sentence" longer than this is a wrong file (a document, binary data), not a sentence


@dataclass
class ParallelCorpus:
    src: list[str]
    tgt: list[str]
    skipped_empty: int = 0  # pairs dropped because one side was empty (empty="skip")


def read_lines(path: str | Path) -> list[str]:
    """Every line of a UTF-8 file with surrounding whitespace removed; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise no_such_file(path)
    lines = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(
                    f"{path}:{number}: line of {len(raw):,} bytes is longer than {MAX_LINE_BYTES:,}; "
                    "is this a file with one sentence a line?"
                )
            try:
                line = raw.decode("utf-8").rstrip("\r\n").strip()
                lines.append(line.removeprefix(BOM).strip() if number == 1 else line)
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{number}: invalid UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})"
                ) from None
    if not lines:
        raise DataError(f"{path}: file is empty")
    return lines


def read_parallel(src_path: str | Path, tgt_path: str | Path, empty: EmptyPolicy = "error") -> ParallelCorpus:
    """Read and check a pair of files; surrounding whitespace of each line is removed."""
    sp, tp = Path(src_path), Path(tgt_path)
    src, tgt = read_lines(sp), read_lines(tp)
    if len(src) != len(tgt):
        raise DataError(f"{sp} has {len(src)} lines but {tp} has {len(tgt)}: the files must be line-aligned")
    keep_src, keep_tgt, skipped = [], [], 0
    for number, (s, t) in enumerate(zip(src, tgt), 1):
        if not s or not t:
            if empty == "error":
                where = sp if not s else tp
                raise DataError(f'{where}:{number}: empty line (set data.empty_lines = "skip" to drop such pairs)')
            skipped += 1
            continue
        keep_src.append(s)
        keep_tgt.append(t)
    return ParallelCorpus(keep_src, keep_tgt, skipped_empty=skipped)
