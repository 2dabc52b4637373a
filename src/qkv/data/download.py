"""Fetch the public datasets the configs in configs/ train and evaluate on, checked byte for byte.

Each file comes from a fixed commit of the public repository that published it (so its bytes never
change), is unpacked where the source packs it, and must match its SHA-256 before it is given its
final name. The layout is the one the configs read: ROOT/multi30k/train.de, ROOT/tinyshakespeare/
input.txt, ... with ROOT = ../shared/data by default. A file already there with the right checksum
is kept; one with other bytes is never overwritten unless asked.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from qkv.data.text import DataError

GITHUB = "https://raw.githubusercontent.com"


class DownloadError(RuntimeError):
    """A file could not be fetched, or its bytes are not the published ones; the message says which."""


@dataclass(frozen=True)
class Source:
    """One file of a dataset: where it comes from and what it must be once unpacked."""

    name: str  # where it goes, under ROOT/<dataset>/
    path: str  # repository/commit/path under the host
    sha256: str  # of the file as written (after unpacking)
    unpack: Literal["none", "gunzip", "sgm", "crlf"] = "none"


_MULTI30K = "multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw"
_SST2 = "nhatminh886688/transformers/9ffc5fbcd5a43a1ec6eb5e89f2c36b6d774e540a/glue_data/SST-2"
_WIKITEXT2 = (
    "OpenNMT/OpenNMT-py/97111d97551c24857076a4102eabdb468b35cff4/eval_llm/WIKITEXT2/wikitext-2-raw-v1/wikitext-2-raw"
)
_WMT14 = "nyu-mll/jiant/ad60d996ed865e59969ca71fe156d4a728e0a0ab/test-full"

# The sources and checksums of ../shared/data (its README names the repositories and commits).
DATASETS: dict[str, tuple[Source, ...]] = {
    "tinyshakespeare": (
        Source(
            "input.txt",
            "karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        ),
    ),
    "multi30k": (  # WMT16 multimodal task 1; test2016 is the source's test_2016_flickr
        Source(
            "train.en",
            f"{_MULTI30K}/train.en.gz",
            "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
            "gunzip",
        ),
        Source(
            "train.de",
            f"{_MULTI30K}/train.de.gz",
            "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
            "gunzip",
        ),
        Source(
            "val.en",
            f"{_MULTI30K}/val.en.gz",
            "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
            "gunzip",
        ),
        Source(
            "val.de",
            f"{_MULTI30K}/val.de.gz",
            "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
            "gunzip",
        ),
        Source(
            "test2016.en",
            f"{_MULTI30K}/test_2016_flickr.en.gz",
            "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
            "gunzip",
        ),
        Source(
            "test2016.de",
            f"{_MULTI30K}/test_2016_flickr.de.gz",
            "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
            "gunzip",
        ),
    ),
    "sst2": (  # the GLUE release of SST-2
        Source("train.tsv", f"{_SST2}/train.tsv", "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
        Source("dev.tsv", f"{_SST2}/dev.tsv", "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
        Source("test.tsv", f"{_SST2}/test.tsv", "69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13"),
    ),
    "wikitext-2": (  # raw WikiText-2 (Merity et al., 2016), validation and test: held-out text for perplexity
        Source(
            "wiki.valid.raw",
            f"{_WIKITEXT2}/wiki.valid.raw",
            "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7",
        ),
        Source(
            "wiki.test.raw",
            f"{_WIKITEXT2}/wiki.test.raw",
            "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08",
        ),
    ),
    "wmt14": (  # newstest2014 en-de, the full 3,003 segments (sacrebleu's wmt14), the paper's test set
        Source(
            "newstest2014.en",
            f"{_WMT14}/newstest2014-deen-src.en.sgm",
            "7294bccf2879a97b3706b95c9595f1459617a8ee7130d5d8581c910e69736971",
            "sgm",
        ),
        Source(
            "newstest2014.de",
            f"{_WMT14}/newstest2014-deen-ref.de.sgm",
            "ae5d110486bc33d7175e9e28c7d0051eb3e5fcd2166dd93371089852c091a20e",
            "sgm",
        ),
    ),
}


# The books of the BERT pre-training benchmark come from two repositories (book_sources.tsv).
_BOOK_REPOSITORIES = {
    "A": ("luolin19850304/StoryGenerator/6cdfa975d880f0bc8dbb27d4786069429fe2e17a", "none"),
    "B": ("jiajie-chen/cs032-project/adbaf4d756ada302dce07bedeecec95429fafcc3", "crlf"),
}


def _books() -> tuple[Source, ...]:
    rows = Path(__file__).with_name("book_sources.tsv").read_text(encoding="utf-8").splitlines()
    table = [row.split("\t") for row in rows if row and not row.startswith("#")][1:]  # after the header
    return tuple(
        Source(name, f"{_BOOK_REPOSITORIES[repo][0]}/{path}", digest, _BOOK_REPOSITORIES[repo][1])
        for name, repo, path, digest in table
    )


DATASETS["books"] = _books()


def lf_text(raw: bytes) -> bytes:
    """CRLF line ends made LF, and a leading UTF-8 byte order mark dropped."""
    return raw.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")


def sgm_text(raw: bytes) -> bytes:
    """The segments of a WMT .sgm file, one a line: each `<seg ...>text</seg>`'s text with its
    whitespace runs collapsed to one space and the ends stripped (as sacrebleu reads these files)."""
    segments = re.findall(r"<seg[^>]*>(.*?)</seg>", raw.decode("utf-8"))
    return "".join(" ".join(s.split()) + "\n" for s in segments).encode("utf-8")


_UNPACK: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda b: b,
    "gunzip": gzip.decompress,
    "sgm": sgm_text,
    "crlf": lf_text,
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(url: str, progress: bool) -> bytes:
    """The body at `url` (https, or file:// for a local mirror), with a byte-count progress bar."""
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
                while chunk := response.read(1 << 16):
                    chunks.append(chunk)
                    bar.update(len(chunk))
            return b"".join(chunks)
    except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors; ValueError: a malformed URL
        raise DownloadError(f"{url}: cannot be fetched ({getattr(err, 'reason', err)})") from None


def _checked(url: str, raw: bytes, src: Source) -> bytes:
    """The unpacked file, if its SHA-256 is the published one."""
    try:
        data = _UNPACK[src.unpack](raw)
    except (OSError, EOFError, ValueError, zlib.error) as err:  # a damaged gzip stream; text that is not UTF-8
        raise DownloadError(f"{url}: cannot be unpacked ({err})") from None
    if (digest := sha256(data)) != src.sha256:
        raise DownloadError(f"{url}: not the published file (SHA-256 {digest[:12]}..., expected {src.sha256[:12]}...)")
    return data


def fetch(
    dataset: str, root: str | Path, host: str = GITHUB, overwrite: bool = False, progress: bool = True
) -> list[tuple[Path, str]]:
    """Write `dataset`'s files under root/dataset/; returns (path, "kept" or "written") for each.

    host: where the repository paths are read from (a mirror with the same paths, file:// included).
    A file whose bytes differ from the published ones is a DownloadError, and nothing is written for
    it; an existing file with other bytes is a DataError and is left alone, unless `overwrite`."""
    if dataset not in DATASETS:
        raise DownloadError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    folder = Path(root) / dataset
    done = []
    for src in DATASETS[dataset]:
        target = folder / src.name
        if target.is_file():
            if sha256(target.read_bytes()) == src.sha256:
                done.append((target, "kept"))
                continue
            if not overwrite:
                raise DataError(f"{target}: holds other bytes than the published file (--overwrite replaces it)")
        url = f"{host.rstrip('/')}/{src.path}"
        data = _checked(url, _get(url, progress), src)
        folder.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        try:
            part.write_bytes(data)
            os.replace(part, target)  # the final name only ever holds the complete, checked file
        except OSError as err:  # a full disk, say: leave no partial file behind
            part.unlink(missing_ok=True)
            raise DownloadError(f"{target}: cannot be written ({err.strerror or err})") from None
        done.append((target, "written"))
    return done
