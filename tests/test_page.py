"""The page of a real `seq2seq serve` on loopback, in Debian's chromium driven by Playwright;
and the server's shutdown on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .test_server import trained_model_dir

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "serve-page.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`seq2seq serve` in a process of its own; returns it and its URL once /readyz is 200."""
    port = free_port()
    command = [sys.executable, "-m", "seq2seq.cli", "serve", "--model-dir", str(trained_model_dir())]
    command += ["--port", str(port), "--max-batch-sentences", "8", *options]
    environment = {**os.environ, "SEQ2SEQ_LOG_LEVEL": "info"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"seq2seq serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    process.kill()
    raise AssertionError(f"seq2seq serve was not ready in 240 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process, url = start_server(log, "--warmup-max-length", "6")
    yield url
    process.terminate()
    process.wait(60)


def test_page_in_chromium(server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
    # what the page asks for by default: beam 4, 3 best, with attention and tokens
    body = {"q": "abcde", "beam": 4, "n_best": 3, "return_attention": True, "return_tokens": True}
    expected = httpx.post(server + "/v1/translate", json=body, timeout=60).json()["translations"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(server + "/")
            expect = sync_api.expect  # waits with locators: the page's CSP forbids evaluating strings
            expect(page.locator("#model")).not_to_be_empty()
            page.fill("#source", "abcde")
            items = page.locator("#n-best-list li")
            expect(items).to_have_count(3, timeout=30_000)
            assert page.text_content("#target") == expected["text"]
            assert [items.nth(i).locator("span").first.text_content() for i in range(3)] == [
                h["text"] for h in expected["n_best"]
            ]
            # the heatmap: one row per output token, one cell per source token
            rows = page.locator("#heatmap tbody tr")
            assert rows.count() == len(expected["tokens"]["target"])
            assert page.locator("#heatmap tbody tr:first-child td").count() == len(expected["tokens"]["source"]) == 5
            assert page.locator("#heatmap thead th").count() == 6  # a corner and the source tokens
            page.hover("#heatmap tbody tr:first-child td:nth-of-type(5)")
            assert "→" in page.text_content("#pair")
            assert page.locator("#heatmap thead th.hover").count() == 1
            assert "batch of" in page.text_content("#timing")
            assert "q=abcde" in page.url  # the shareable URL
            page.screenshot(path=str(SCREENSHOT if os.environ.get("SEQ2SEQ_SCREENSHOT") else tmp_path / "page.png"))
            # Ctrl+Enter translates at once
            page.fill("#source", "hgf")
            page.press("#source", "Control+Enter")
            expect(page.locator("#heatmap tbody tr:first-child td")).to_have_count(3, timeout=30_000)
            assert len(page.text_content("#target")) >= 1
            # past the character limit: an inline error, and no request
            page.fill("#source", "a" * 1001)
            page.wait_for_selector("#input-error:not([hidden])")
            assert "at most 1000 characters" in page.text_content("#input-error")
            assert "1001 / 1000" in page.text_content("#counter")
            assert "invalid" in (page.get_attribute("#source", "class") or "")
            assert problems == []  # no script error, nothing the Content-Security-Policy blocked
        finally:
            browser.close()


def test_sigterm_finishes_what_is_queued(tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_server(log, "--no-warmup", "--batch-window-ms", "50")
    answers: list = []

    def client(text: str) -> None:
        # beam 5 was never compiled: the first call compiles, so requests queue behind it
        body = {"q": [text, text[::-1]], "beam": 5, "n_best": 2}
        try:
            answers.append(httpx.post(url + "/v1/translate", json=body, timeout=120).status_code)
        except httpx.HTTPError as error:
            answers.append(repr(error))

    threads = [threading.Thread(target=client, args=(text,)) for text in ("abc", "hgfe", "ab", "cdc", "eeh", "fa")]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the requests reach the server
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert answers == [200] * len(threads), log.read_text()
    assert code in (0, -signal.SIGTERM), log.read_text()  # uvicorn may re-raise the signal on exit
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/healthz", timeout=2)
