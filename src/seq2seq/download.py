"""Known pair corpora fetched once into a cache: Tatoeba sentence pairs as the textbook uses them.

`spa-eng` is the archive of TensorFlow's NMT tutorial; `LLL-eng` (fra-eng, deu-eng, ...) is a
manythings.org/anki file. Each is a zip holding one pair file, `English<TAB>Other` per line
(the anki files add an attribution column, which `read_pairs` ignores). The pair file is
extracted into the cache directory (`~/.cache/seq2seq/data`, or `SEQ2SEQ_DATA_DIR`) and the
archive deleted, so the pair file's presence is the whole cache state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .config import ConfigError
from .data import DataError
from .files import atomic_path

TATOEBA_PREFIX = "tatoeba:"
CACHE_DIR_VARIABLE = "SEQ2SEQ_DATA_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/seq2seq/data")

TATOEBA_LICENCE = (
    "Sentences from the Tatoeba Project (https://tatoeba.org), licensed CC-BY 2.0 France "
    "(https://creativecommons.org/licenses/by/2.0/fr/): credit Tatoeba and its contributors "
    "when you share the data or what you make from it."
)
ANKI_URL = "https://www.manythings.org/anki/{name}.zip"
_ANKI_NAME = re.compile(r"[a-z]{3}-eng")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Corpus:
    """Where a corpus comes from, which file of its archive holds the pairs, and its terms."""

    url: str
    pair_file: str  # the file's name in the archive, in whichever folder
    sha256: str | None  # None: not verified by us, so not checked unless --sha256 gives one
    licence: str


KNOWN_CORPORA: dict[str, Corpus] = {
    "spa-eng": Corpus(
        url="http://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip",
        pair_file="spa.txt",
        sha256=None,
        licence=TATOEBA_LICENCE + " This copy (TensorFlow's, from manythings.org/anki) has no attribution column.",
    ),
}


class DownloadError(DataError):
    """A corpus could not be fetched, verified or unpacked; the message names the URL and what to do."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, None, reason)


def corpus(name: str) -> Corpus:
    """The known corpus `name`, or the manythings.org/anki file for an `LLL-eng` name."""
    if name in KNOWN_CORPORA:
        return KNOWN_CORPORA[name]
    if _ANKI_NAME.fullmatch(name):
        return Corpus(
            url=ANKI_URL.format(name=name),
            pair_file=f"{name.split('-')[0]}.txt",
            sha256=None,
            licence=TATOEBA_LICENCE + " Pairs selected by manythings.org/anki; the third column of each line "
            "names the sentences' Tatoeba numbers and authors.",
        )
    known = ", ".join(KNOWN_CORPORA)
    raise ConfigError(
        f"unknown corpus {name!r}; known: {known}, or LLL-eng for a manythings.org/anki file "
        "(three-letter language code, e.g. fra-eng, deu-eng, ita-eng)"
    )


def cache_directory(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir` if given, else $SEQ2SEQ_DATA_DIR, else ~/.cache/seq2seq/data."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_VARIABLE) or DEFAULT_CACHE_DIR
    return Path(chosen).expanduser()


def cached_pair_file(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the pair file of corpus `name` lies once downloaded, e.g. CACHE/spa-eng/spa.txt."""
    return cache_directory(cache_dir) / name / corpus(name).pair_file


def download(
    name: str,
    url: str | None = None,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    report: Callable[[str], None] | None = None,
) -> Path:
    """The pair file of corpus `name`, downloaded and extracted unless already in the cache.

    `url` replaces the source (a mirror, or file:///path/to/NAME.zip for a copy on disk);
    `sha256` is the archive's expected checksum. After a download the licence goes to
    `report` (stderr by default); progress goes to stderr, so stdout stays clean.
    """
    report = report or _to_stderr
    source = corpus(name)
    expected = _checked_sha256(sha256) if sha256 else source.sha256
    pair_file = cached_pair_file(name, cache_dir)
    if pair_file.is_file():
        if url or sha256:  # say why they had no effect
            report(
                f"{name}: already in the cache, so --url/--sha256 were not used (nothing was downloaded or checked); "
                f"delete {pair_file.parent} to download again"
            )
        return pair_file
    url = url or source.url
    directory = _writable(cache_directory(cache_dir))
    archive = _fetch(url, directory / f"{name}.zip", expected)
    try:
        _extract(archive, source.pair_file, pair_file, url)
    finally:
        archive.unlink(missing_ok=True)
    report(f"{name}: {source.licence}")
    return pair_file


def _checked_sha256(sha256: str) -> str:
    if not _SHA256.fullmatch(sha256):
        raise ConfigError(f"--sha256 must be 64 hexadecimal digits (sha256sum's output), got {sha256!r}")
    return sha256.lower()


def _writable(directory: Path) -> Path:
    """The cache directory, created; an error saying how to choose another if it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            directory, None, f"cannot create the cache directory ({error.strerror}); {_OTHER_CACHE}"
        ) from None
    if not os.access(directory, os.W_OK):  # get_file would quietly fall back to /tmp/.keras
        raise DataError(directory, None, f"the cache directory is not writable; {_OTHER_CACHE}")
    return directory


_OTHER_CACHE = f"choose another with --cache-dir or {CACHE_DIR_VARIABLE}"


def _fetch(url: str, archive: Path, expected: str | None) -> Path:
    """Download `url` to `archive` with keras.utils.get_file, checking `expected` if given.

    A bad checksum deletes the file (get_file keeps it), so that a retry downloads it again.
    """
    from keras.utils import get_file

    def failed(error: Exception) -> DownloadError:
        detail = str(error).removeprefix(f"URL fetch failure on {url}: ").removeprefix("None -- ")
        return DownloadError(
            url,
            f"download failed ({detail}); check the network connection, or give a mirror with --url "
            f"(a copy on disk works too: --url file:///path/to/{archive.name})",
        )

    try:
        with contextlib.redirect_stdout(sys.stderr):
            get_file(
                fname=archive.name,
                origin=url,
                file_hash=expected,
                hash_algorithm="sha256",
                cache_dir=str(archive.parent),
                cache_subdir="",
                force_download=True,  # a leftover archive is a killed download: never trust it
            )
    except ValueError as error:  # get_file's checksum mismatch, or a URL urllib cannot parse
        got = _sha256_of(archive) if expected and archive.is_file() else None
        archive.unlink(missing_ok=True)
        if got is not None and got != expected:
            raise DownloadError(
                url,
                f"checksum mismatch: expected sha256 {expected}, got {got}; the file was deleted, "
                "so a retry downloads it again (check --sha256, or the mirror given with --url)",
            ) from None
        raise failed(error) from None
    except Exception as error:  # get_file turns HTTP and connection errors into plain Exceptions
        archive.unlink(missing_ok=True)
        raise failed(error) from None
    return archive


def _extract(archive: Path, member_name: str, pair_file: Path, url: str) -> None:
    """Copy the archive's `member_name` (in whichever folder) to `pair_file`, atomically."""
    try:
        with zipfile.ZipFile(archive) as packed:
            names = packed.namelist()
            members = [n for n in names if PurePosixPath(n).name == member_name]
            if not members:
                held = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
                raise DownloadError(
                    url,
                    f"the archive holds no pair file {member_name} (it holds: {held or 'nothing'}); "
                    "check the URL given with --url",
                )
            pair_file.parent.mkdir(parents=True, exist_ok=True)
            with packed.open(members[0]) as source, atomic_path(pair_file) as temporary, temporary.open("wb") as out:
                shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise DownloadError(
            url,
            f"the downloaded archive is damaged or not a zip file ({error}); it was deleted, so a retry "
            "downloads it again (or give a mirror with --url)",
        ) from None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)
