"""`seq2seq data download` and `--data tatoeba:NAME`, against a loopback HTTP server only."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from seq2seq import download as downloads
from seq2seq.cli import main
from seq2seq.config import ConfigError
from seq2seq.data import load_pairs
from seq2seq.download import DownloadError, cache_directory, download

SPA_LINES = [f"{w}.\t{w[::-1]}.\n" for w in ("go", "run", "hello", "thanks", "wait", "stop")]
FRA_LINES = [
    "Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #1158250 (Wittydev)\n",
    "Hi.\tSalut !\tCC-BY 2.0 (France) Attribution: tatoeba.org #538123 (CM) & #509819 (Aiji)\n",
]


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


class Server:
    """Serves `files` (URL path -> bytes) on 127.0.0.1, 404 for anything else, counting requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "File not found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    server = Server()
    server.files["/spa-eng.zip"] = zip_of({"spa-eng/spa.txt": "".join(SPA_LINES)})
    server.files["/fra-eng.zip"] = zip_of({"_about.txt": "about", "fra.txt": "".join(FRA_LINES)})
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test's cache is its own: $SEQ2SEQ_DATA_DIR and $HOME point into tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEQ2SEQ_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_downloads_extracts_and_caches_once(server, cache, capsys):
    path = download("spa-eng", url=server.url("/spa-eng.zip"))
    assert path == cache / "spa-eng" / "spa.txt"
    assert path.read_text() == "".join(SPA_LINES)
    assert files_in(cache) == [path]  # the archive is gone once extracted
    assert "CC-BY 2.0 France" in capsys.readouterr().err

    assert download("spa-eng", url=server.url("/spa-eng.zip")) == path
    assert load_pairs("tatoeba:spa-eng")[0].source == "go."
    assert server.requests == ["/spa-eng.zip"]  # fetched once


def test_anki_file_third_column_is_ignored(server, cache):
    download("fra-eng", url=server.url("/fra-eng.zip"))
    assert [(p.source, p.target) for p in load_pairs("tatoeba:fra-eng")] == [("Go.", "Va !"), ("Hi.", "Salut !")]
    assert files_in(cache) == [cache / "fra-eng" / "fra.txt"]


def test_cache_directory_flag_over_variable_over_home(tmp_path, monkeypatch):
    assert cache_directory(tmp_path / "flag") == tmp_path / "flag"
    assert cache_directory() == tmp_path / "cache"
    monkeypatch.delenv("SEQ2SEQ_DATA_DIR")
    assert cache_directory() == tmp_path / "home" / ".cache" / "seq2seq" / "data"


def test_cli_download_prints_the_path_and_the_attribution(server, tmp_path, capsys):
    cache_dir = tmp_path / "elsewhere"
    argv = ["data", "download", "spa-eng", "--url", server.url("/spa-eng.zip"), "--cache-dir", str(cache_dir)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out == f"{cache_dir / 'spa-eng' / 'spa.txt'}\n"  # stdout holds the path only
    assert "tatoeba.org" in err and "CC-BY 2.0 France" in err
    assert not (tmp_path / "cache").exists()  # --cache-dir wins over $SEQ2SEQ_DATA_DIR


def test_cli_data_spec_still_writes_pairs(server, capsys):
    assert main(["data", "builtin:reverse", "--num-samples", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    download("spa-eng", url=server.url("/spa-eng.zip"))
    assert main(["data", "tatoeba:spa-eng", "--num-samples", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line + "\n" in SPA_LINES for line in out)


def test_cli_misplaced_options_are_clear_errors(capsys):
    assert main(["data", "download"]) == 2
    assert "needs a NAME" in capsys.readouterr().err
    assert main(["data", "builtin:reverse", "--url", "http://127.0.0.1:9/x.zip"]) == 2
    assert "--url: only with data download NAME" in capsys.readouterr().err


def test_unknown_name_lists_the_known_ones(capsys):
    with pytest.raises(ConfigError, match=r"known: spa-eng, or LLL-eng .*fra-eng"):
        download("klingon")
    assert main(["data", "download", "eng-fra"]) == 2
    assert "unknown corpus 'eng-fra'" in capsys.readouterr().err


def test_corrupt_archive_is_a_clear_error_and_leaves_nothing(server, cache, capsys):
    server.files["/spa-eng.zip"] = b"PK\x03\x04 this is not really a zip file"
    url = server.url("/spa-eng.zip")
    assert main(["data", "download", "spa-eng", "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"seq2seq: error: {url}: the downloaded archive is damaged or not a zip file" in err
    assert files_in(cache) == []


def test_archive_without_the_pair_file_is_a_clear_error(server, cache):
    server.files["/spa-eng.zip"] = zip_of({"spa-eng/readme.txt": "nothing here"})
    with pytest.raises(DownloadError, match=r"holds no pair file spa.txt \(it holds: spa-eng/readme.txt\)"):
        download("spa-eng", url=server.url("/spa-eng.zip"))
    assert files_in(cache) == []


def test_checksum_is_checked(server, cache, capsys):
    url = server.url("/spa-eng.zip")
    wrong = "0" * 64
    got = hashlib.sha256(server.files["/spa-eng.zip"]).hexdigest()
    assert main(["data", "download", "spa-eng", "--url", url, "--sha256", wrong]) == 2
    err = capsys.readouterr().err
    assert f"checksum mismatch: expected sha256 {wrong}, got {got}" in err and url in err
    assert files_in(cache) == []  # the bad file is deleted, so a retry downloads again

    assert main(["data", "download", "spa-eng", "--url", url, "--sha256", got.upper()]) == 0
    assert capsys.readouterr().out == f"{cache / 'spa-eng' / 'spa.txt'}\n"
    assert main(["data", "download", "spa-eng", "--sha256", "abc"]) == 2
    assert "--sha256 must be 64 hexadecimal digits" in capsys.readouterr().err
    assert main(["data", "download", "spa-eng", "--sha256", wrong]) == 0  # cached: nothing to check
    assert "already in the cache, so --url/--sha256 were not used" in capsys.readouterr().err
    assert len(server.requests) == 2


def test_missing_file_names_the_url_and_suggests_a_mirror(server, cache, capsys):
    url = server.url("/nowhere/spa-eng.zip")
    assert main(["data", "download", "spa-eng", "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"seq2seq: error: {url}: download failed (404" in err and "give a mirror with --url" in err
    assert files_in(cache) == []


def test_connection_refused_names_the_url(cache):
    with socket.socket() as probe:  # a port nothing listens on any more
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/spa-eng.zip"
    with pytest.raises(DownloadError, match=r"download failed \(.*Connection refused") as raised:
        download("spa-eng", url=url)
    assert str(raised.value).startswith(url)
    assert files_in(cache) == []


def test_a_copy_on_disk_works_as_url(server, tmp_path, cache):
    copy = tmp_path / "fra-eng.zip"
    copy.write_bytes(server.files["/fra-eng.zip"])
    assert download("fra-eng", url=copy.as_uri()).read_text() == "".join(FRA_LINES)
    assert server.requests == []


def test_train_on_a_cached_tatoeba_corpus(server, cache, tmp_path, monkeypatch):
    lines = [f"{w}\t{w[::-1]}\n" for w in _words(200)]
    server.files["/spa-eng.zip"] = zip_of({"spa-eng/spa.txt": "".join(lines)})
    download("spa-eng", url=server.url("/spa-eng.zip"))
    monkeypatch.setattr(downloads, "_fetch", _no_network)  # train must read the cache

    model_dir = tmp_path / "model"
    argv = ["train", "--data", "tatoeba:spa-eng", "--model-dir", str(model_dir), "--textbook", "--quiet"]
    assert main([*argv, "--epochs", "1", "--latent-dim", "8", "--batch-size", "64"]) == 0
    assert json.loads((model_dir / "config.json").read_text())["data"] == "tatoeba:spa-eng"
    held = [(model_dir / "split" / f"{part}.tsv").read_text() for part in ("train", "dev", "test")]
    assert sorted("".join(held).splitlines(keepends=True)) == sorted(lines)
    assert server.requests == ["/spa-eng.zip"]


def _no_network(*args):
    raise AssertionError("tried to download a cached corpus")


def _words(n: int) -> list[str]:
    import random

    rng = random.Random(0)
    return ["".join(rng.choice("abcd") for _ in range(rng.randint(2, 5))) for _ in range(n)]
