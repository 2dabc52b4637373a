"""Reading users' text files with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

BOM = "\ufeff"  # the mark some editors (Notepad) put at the start of a UTF-8 file; not part of the text


class DataError(ValueError):
    """Bad input data; the message names the file (and line where there is one)."""


def no_such_file(path: Path) -> DataError:
    """The error for an input that is not a file: a directory, or missing. For a missing one, a relative
    path also names the directory it was looked up from (config paths such as ../shared/data are
    relative to where qkv runs, not to the config file), and a benchmark dataset's file names the
    command that fetches it."""
    from qkv.data.download import DATASETS  # here: download.py needs DataError from this module

    if path.is_dir():
        return DataError(f"{path}: is a directory; a file is wanted here")
    where = "" if path.is_absolute() else f" (looked for from {Path.cwd()})"
    files = {name: {source.name for source in sources} for name, sources in DATASETS.items()}
    if path.name in files:  # a dataset's directory (books)
        fetch = f"; `qkv download {path.name} --out {path.parent}` fetches it"
    elif path.parent.name in files and path.name in files[path.parent.name]:  # one of its files
        fetch = f"; `qkv download {path.parent.name} --out {path.parent.parent}` fetches it"
    else:
        fetch = ""
    return DataError(f"{path}: no such file{where}{fetch}")


def text_files_in(directory: Path) -> list[Path]:
    """The .txt files of a directory, in name order: a corpus kept one document a file (the books)."""
    files = sorted(Path(directory).glob("*.txt"))
    if not files:
        raise DataError(f"{directory}: a directory with no .txt files")
    return files


def read_text(path: str | Path) -> str:
    """The whole file as text; missing, empty and non-UTF-8 files are errors naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise no_such_file(p)
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{p}:{line}: invalid UTF-8 (byte {raw[err.start]:#04x} at offset {err.start})") from None
    if not text.strip():
        raise DataError(f"{p}: file is empty")
    return text
