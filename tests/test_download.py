"""`qkv download`: files fetched from a mirror (file://, no network), unpacked and checked by SHA-256."""

import gzip
from pathlib import Path

import pytest

from qkv.cli import main
from qkv.data.download import DATASETS, DownloadError, Source, fetch, lf_text, sgm_text, sha256
from qkv.data.text import DataError

SGM = """<srcset setid="newstest2014" srclang="any">
<doc docid="1" genre="news" origlang="de">
<seg id="1">Gutach:  Increased safety\tfor pedestrians </seg>
<seg id="2"> Two sets of lights - intentional?</seg>
</doc>
</srcset>
"""
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def mirror(tmp_path: Path) -> tuple[str, tuple[Source, ...]]:
    """A host with three files (plain, gzipped, SGML) and the sources that describe them."""
    host = tmp_path / "host"
    (host / "o/r/c").mkdir(parents=True)
    (host / "o/r/c/plain.txt").write_bytes(b"to be or not to be\n")
    (host / "o/r/c/train.en.gz").write_bytes(gzip.compress(b"a dog runs\n"))
    (host / "o/r/c/test.sgm").write_text(SGM)
    expected = {"plain.txt": b"to be or not to be\n", "train.en": b"a dog runs\n", "test.en": sgm_text(SGM.encode())}
    sources = (
        Source("plain.txt", "o/r/c/plain.txt", sha256(expected["plain.txt"])),
        Source("train.en", "o/r/c/train.en.gz", sha256(expected["train.en"]), "gunzip"),
        Source("test.en", "o/r/c/test.sgm", sha256(expected["test.en"]), "sgm"),
    )
    return host.as_uri(), sources


def test_sgm_segments_become_lines_with_whitespace_collapsed():
    assert sgm_text(SGM.encode()) == b"Gutach: Increased safety for pedestrians\nTwo sets of lights - intentional?\n"


def test_windows_text_gets_lf_line_ends_and_loses_its_byte_order_mark():
    assert lf_text("\ufeffChapter 1\r\n\r\nIt was\r\n".encode()) == b"Chapter 1\n\nIt was\n"
    assert lf_text(b"plain\n") == b"plain\n"


def test_every_benchmark_dataset_is_listed_with_its_files():
    assert {name: len(files) for name, files in DATASETS.items()} == {
        "tinyshakespeare": 1, "multi30k": 6, "sst2": 3, "wikitext-2": 2, "wmt14": 2, "books": 78,
    }  # fmt: skip
    assert all(len(f.sha256) == 64 and f.path.count("/") >= 3 for files in DATASETS.values() for f in files)


def test_fetch_writes_checked_files_then_keeps_them_and_never_overwrites_others(tmp_path, monkeypatch):
    host, sources = mirror(tmp_path)
    monkeypatch.setitem(DATASETS, "toy", sources)
    root = tmp_path / "data"
    assert [(p.name, what) for p, what in fetch("toy", root, host, progress=False)] == [
        ("plain.txt", "written"), ("train.en", "written"), ("test.en", "written"),
    ]  # fmt: skip
    assert (root / "toy/train.en").read_bytes() == b"a dog runs\n"
    assert (root / "toy/test.en").read_text().splitlines()[0] == "Gutach: Increased safety for pedestrians"
    assert sorted(p.name for p in (root / "toy").iterdir()) == ["plain.txt", "test.en", "train.en"]  # no .part
    assert {what for _, what in fetch("toy", root, host, progress=False)} == {"kept"}
    (root / "toy/plain.txt").write_text("my own edit\n")
    with pytest.raises(DataError, match="plain.txt: holds other bytes than the published file"):
        fetch("toy", root, host, progress=False)
    assert (root / "toy/plain.txt").read_text() == "my own edit\n"
    assert [what for _, what in fetch("toy", root, host, overwrite=True, progress=False)] == ["written", "kept", "kept"]
    assert (root / "toy/plain.txt").read_bytes() == b"to be or not to be\n"


@pytest.mark.parametrize(
    "served, written, message",
    [
        ("plain.txt", "plain.txt", "not the published file"),  # other bytes
        ("train.en.gz", "train.en", "cannot be unpacked"),  # a damaged gzip stream
        ("test.sgm", "test.en", "cannot be fetched"),  # not on the host
    ],
    ids=["other-bytes", "broken-gzip", "missing"],
)
def test_a_file_that_is_not_the_published_one_is_never_written(tmp_path, monkeypatch, served, written, message):
    host, sources = mirror(tmp_path)
    monkeypatch.setitem(DATASETS, "toy", sources)
    path = tmp_path / "host/o/r/c" / served
    if message == "cannot be fetched":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(DownloadError, match=message):
        fetch("toy", tmp_path / "data", host, progress=False)
    assert not (tmp_path / "data/toy" / written).exists()
    assert not list((tmp_path / "data").rglob("*.part"))


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    host, sources = mirror(tmp_path)
    monkeypatch.setitem(DATASETS, "toy", sources[:1])

    def disk_full(self, data):
        Path.write_text(self, "half")  # something reached the disk before the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(DownloadError, match="plain.txt: cannot be written \\(No space left on device\\)"):
        fetch("toy", tmp_path / "data", host, progress=False)
    assert list((tmp_path / "data/toy").iterdir()) == []


def test_cli_download(tmp_path, monkeypatch, capsys):
    host, sources = mirror(tmp_path)
    monkeypatch.setitem(DATASETS, "tinyshakespeare", sources[:1])
    argv = ["download", "tinyshakespeare", "--out", str(tmp_path / "data"), "--host", host, "--no-progress"]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'data/tinyshakespeare/plain.txt'} (downloaded, checksum right)\n"
    assert main(argv) == 0 and "(already there, checksum right)" in capsys.readouterr().out
    assert main([*argv[:-3], "--host", (tmp_path / "nowhere").as_uri()]) == 0  # nothing to fetch: all kept
    (tmp_path / "data/tinyshakespeare/plain.txt").unlink()
    assert main([*argv[:-3], "--host", (tmp_path / "nowhere").as_uri()]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("qkv download: file://") and "cannot be fetched" in err


@pytest.mark.skipif(not SHARED.is_dir(), reason="the benchmark data (../shared/data) is not on this machine")
def test_the_published_checksums_are_those_of_the_benchmark_data():
    for dataset, sources in DATASETS.items():
        for src in sources:
            assert sha256((SHARED / dataset / src.name).read_bytes()) == src.sha256, f"{dataset}/{src.name}"


def test_a_missing_dataset_file_names_the_command_that_fetches_it(tmp_path):
    from qkv.data.text import read_text

    hint = rf"multi30k/train\.de: no such file; `qkv download multi30k --out {tmp_path}` fetches it$"
    with pytest.raises(DataError, match=hint):
        read_text(tmp_path / "multi30k" / "train.de")
    with pytest.raises(DataError, match=rf"books: no such file; `qkv download books --out {tmp_path}` fetches it$"):
        read_text(tmp_path / "books")
    with pytest.raises(DataError, match=r"other/train\.de: no such file$"):  # not a dataset's file: no hint
        read_text(tmp_path / "other" / "train.de")
    with pytest.raises(DataError, match=rf"^{tmp_path}: is a directory; a file is wanted here$"):
        read_text(tmp_path)
