"""`seq2seq serve`: a REST API and a page over one trained model, batching concurrent requests.

    create_app(model_dir, settings)   the FastAPI app (the model loaded once, at creation)
    Batcher                           merges concurrent requests with the same decoding
                                      options into one `Seq2Seq.decode` call
    serve(model_dir, settings)        runs the app with uvicorn

Requests are parsed and answered on the event loop; decoding runs in one worker thread
(JAX is not called from two threads at once), so the loop never waits on a decode. A
request's texts wait in a bounded queue for at most `batch_window_ms` after the first of a
batch arrived; then the requests of that batch's options, up to `max_batch_sentences`
texts and `max_batch_tokens` source tokens, are decoded in one call, sorted into the
length buckets by `Seq2Seq.decode`. Each request gets what `Seq2Seq.n_best` gives for its
texts alone (`Seq2Seq.decode` keeps each input's own output limit; sampled requests are
never merged, as a draw depends on its batch and row).

Errors have one shape, `{"error": {"code", "message", "param"}}`, never with status 200;
the OpenAPI document (/openapi.json) states it, the answers and the limits. A body over
`max_body_bytes` is 413 unread, one that has not all come within `body_timeout_s` 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .files import EVALUATION_FILE

STATIC_DIR = Path(__file__).parent / "static"
# The page and every other answer: nothing but this server's own scripts, styles and API.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass
class ServerSettings:
    """What `seq2seq serve` is started with; every limit has a flag."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # bearer token for the API (the page, /healthz, /readyz stay open)
    cors_origins: list[str] = field(default_factory=list)  # none: no CORS headers at all
    max_texts: int = 64  # texts in one request
    max_chars: int = 1000  # characters in one text
    max_body_bytes: int = 1_000_000
    max_beam: int = 8
    max_n_best: int = 8
    max_queue: int = 1024  # texts waiting to be decoded; past it, 429
    batch_window_ms: float = 5.0  # 0: no merging, one request per decode call
    max_batch_sentences: int = 64
    max_batch_tokens: int = 8192  # source tokens in one decode call
    timeout_s: float = 30.0  # a request's deadline, queueing and decoding
    body_timeout_s: float = 5.0  # a request's body must arrive within this; past it, 408
    warmup: bool = True
    warmup_max_length: int = 48  # compile for sources up to this many tokens (and the training data's longest)
    source_lang: str = "src"  # codes for the LibreTranslate-compatible endpoints
    target_lang: str = "tgt"

    def __post_init__(self) -> None:
        names = ("port", "max_texts", "max_chars", "max_body_bytes", "max_beam", "max_n_best", "max_queue")
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_batch_sentences", "max_batch_tokens", "warmup_max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_window_ms < 0 or not self.timeout_s > 0:
            raise ValueError("batch_window_ms must be at least 0 and timeout_s positive")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be positive, got {self.body_timeout_s}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("the API key must not be empty")

    def limits(self) -> dict[str, Any]:
        names = ("max_texts", "max_chars", "max_body_bytes", "body_timeout_s", "max_beam", "max_n_best")
        names += ("max_queue", "batch_window_ms", "max_batch_sentences", "max_batch_tokens")
        names += ("timeout_s",)
        return {name: getattr(self, name) for name in names}


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message", "param"}}` with `status`."""

    def __init__(
        self, status: int, code: str, message: str, param: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.headers = status, code, message, param, headers


def error_response(status: int, code: str, message: str, param: str | None = None, headers=None) -> JSONResponse:
    # a message or param may quote the request (a field's name), and JSON may carry lone
    # surrogates ("\ud800") that UTF-8 cannot: they become "?"
    message, param = _unicode(message), None if param is None else _unicode(param)
    body = {"error": {"code": code, "message": message, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def _unicode(text: str) -> str:
    """`text` with each lone surrogate (not encodable in UTF-8) replaced by "?"."""
    return text.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------------------- batching


class QueueFull(Exception):
    """The queue holds `max_queue` texts already."""


class DeadlineExceeded(Exception):
    """A request was not answered before its deadline."""


class NotRunning(Exception):
    """The batcher is not started, or is shutting down."""


@dataclass
class BatchResult:
    """One request's outputs, with how long it waited and the size of the call it was in."""

    outputs: list  # list[api.Output]
    queue_ms: float
    decode_ms: float
    batch_size: int


@dataclass(eq=False)
class _Job:
    texts: list[str]
    tokens: int
    key: Any
    return_attention: bool
    arrived: float
    deadline: float
    future: asyncio.Future
    gone: Callable[[], bool] | None  # whether the client has disconnected, without waiting


class Batcher:
    """Merges concurrent requests into batched decode calls, run one at a time in one
    worker thread.

    `decode(groups, key, return_attention)` is called in the worker with the texts of
    every merged request (one group each) and must return a `Decoded`-like object with
    `.outputs` (one list per group), `.calls` and `.padding_share`. Requests are merged
    only when their `key` is equal (the decoding options; a unique key keeps a request
    alone). A batch closes `window_s` after its first request arrived, or at once when
    `max_sentences` texts of its key wait; it takes requests in arrival order up to
    `max_sentences` texts and `max_tokens` tokens (the first always). With `window_s` 0
    every request is decoded alone. A decode call's rows are padded up to one of
    `row_buckets` (api.row_buckets; none: no padding known): a batch that spills past one
    into a bucket at least twice as large leaves its trailing requests for the next call
    when the rest fills the first exactly (at 32 one-sentence clients, batches of 17 paid
    for 32 rows). Requests whose deadline passed get `DeadlineExceeded`, and requests
    whose client has gone are dropped, before they count towards a batch.
    """

    def __init__(
        self,
        decode: Callable[[list[list[str]], Any, bool], Any],
        window_s: float = 0.005,
        max_sentences: int = 64,
        max_tokens: int = 8192,
        max_queue: int = 1024,
        metrics: Metrics | None = None,
        row_buckets: Sequence[int] = (),
    ) -> None:
        self.decode = decode
        self.row_buckets = sorted(row_buckets)
        self.window_s = window_s
        self.max_sentences = max_sentences
        self.max_tokens = max_tokens
        self.max_queue = max_queue
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seq2seq-decode")
        self.queued = 0  # texts waiting
        self.calls = 0  # decode calls made
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="seq2seq-batcher")

    async def run_in_worker(self, function: Callable, *args) -> Any:
        """Run `function(*args)` in the decoding thread (warm-up uses this too)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def submit(
        self,
        texts: Sequence[str],
        key: Any,
        tokens: int,
        timeout_s: float,
        return_attention: bool = False,
        gone: Callable[[], bool] | None = None,
    ) -> BatchResult:
        """Queue a request's texts and wait for their outputs (at most `timeout_s`). `gone`
        tells, without waiting, whether the client has disconnected (`client_gone`)."""
        if self._task is None or self._closing:
            raise NotRunning("the server is not running")
        if self.queued + len(texts) > self.max_queue:
            raise QueueFull(f"the queue is full ({self.queued} texts wait, at most {self.max_queue})")
        loop = asyncio.get_running_loop()
        now = loop.time()
        job = _Job(list(texts), tokens, key, return_attention, now, now + timeout_s, loop.create_future(), gone)
        self._pending.append(job)
        self._queued(len(texts))
        if self._wakeup is not None:
            self._wakeup.set()
        try:
            # on a timeout wait_for cancels the future, so the batcher skips the request
            return await asyncio.wait_for(job.future, timeout_s)
        except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
            raise DeadlineExceeded(f"no answer within {timeout_s:g} s") from None

    async def close(self) -> None:
        """Stop taking requests, decode every queued one, then stop the worker."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self.executor.shutdown(wait=True)

    def _queued(self, change: int) -> None:
        self.queued += change
        if self.metrics:
            self.metrics.queue.set(self.queued)

    def _waiting(self, key: Any) -> int:
        return sum(len(job.texts) for job in self._pending if job.key == key)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = self._pending[0]
            # the window runs from the batch's first request; a full batch does not wait
            while (
                self.window_s > 0
                and not self._closing
                and loop.time() < head.arrived + self.window_s
                and self._waiting(head.key) < self.max_sentences
            ):
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), head.arrived + self.window_s - loop.time())
            batch = self._take(head.key)
            if batch:
                await self._decode(batch)

    def _take(self, key: Any) -> list[_Job]:
        """Remove from the queue the requests of `key` that fit in one call, in order, and
        the requests of `key` met on the way that are no longer wanted (`_wanted`)."""
        now = asyncio.get_running_loop().time()
        batch: list[_Job] = []
        dropped: list[_Job] = []
        sentences = tokens = 0
        for job in self._pending:
            if job.key != key:
                continue
            if batch and (
                self.window_s == 0
                or sentences + len(job.texts) > self.max_sentences
                or tokens + job.tokens > self.max_tokens
            ):
                break
            if not self._wanted(job, now):
                dropped.append(job)
                continue
            batch.append(job)
            sentences += len(job.texts)
            tokens += job.tokens
        batch = self._fill_bucket(batch)
        taken = dropped + batch
        for job in taken:
            self._pending.remove(job)
        self._queued(-sum(len(job.texts) for job in taken))
        return batch

    def _fill_bucket(self, batch: list[_Job]) -> list[_Job]:
        """`batch` without its trailing requests past the largest row bucket it holds,
        when the rest fills that bucket exactly and the bucket `batch` would be padded to
        is at least twice as large; else `batch` as it is."""
        sentences = sum(len(job.texts) for job in batch)
        full = max((rows for rows in self.row_buckets if rows <= sentences), default=sentences)
        padded = min((rows for rows in self.row_buckets if rows >= sentences), default=sentences)
        if padded < 2 * full:
            return batch
        kept = len(batch)
        while kept > 1 and sentences > full:
            kept -= 1
            sentences -= len(batch[kept].texts)
        return batch[:kept] if sentences == full else batch

    def _wanted(self, job: _Job, now: float) -> bool:
        """Whether `job` is still worth decoding; if not, its waiter is answered (when one
        still waits) and the rejection counted."""
        if job.future.done():  # its waiter timed out or was cancelled
            self._reject("cancelled")
        elif now > job.deadline:
            job.future.set_exception(DeadlineExceeded("the deadline passed while queued"))
            self._reject("deadline")
        elif job.gone is not None and job.gone():
            job.future.cancel()
            self._reject("disconnected")
        else:
            return True
        return False

    def _reject(self, reason: str) -> None:
        if self.metrics:
            self.metrics.rejections.labels(reason).inc()

    async def _decode(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        groups = [job.texts for job in batch]
        attention = any(job.return_attention for job in batch)
        try:
            decoded = await self.run_in_worker(self.decode, groups, batch[0].key, attention)
        except Exception as error:  # the waiters answer it; the batcher keeps going
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        finished = loop.time()
        self.calls += 1
        size = sum(len(group) for group in groups)
        if self.metrics:
            self.metrics.batch_sentences.observe(size)
            self.metrics.padding.observe(decoded.padding_share)
            self.metrics.decode_seconds.observe(finished - started)
            self.metrics.decode_calls.inc(decoded.calls)
        for job, outputs in zip(batch, decoded.outputs, strict=True):
            if not job.future.done():
                queue_ms = 1000 * (started - job.arrived)
                job.future.set_result(BatchResult(outputs, queue_ms, 1000 * (finished - started), size))


# ---------------------------------------------------------------------------- metrics


ENDPOINTS = ("/", "/v1/translate", "/translate", "/languages", "/v1/info", "/healthz", "/readyz", "/metrics")


class Metrics:
    """The app's Prometheus metrics, in a registry of its own (several apps, several registries)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("seq2seq_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "seq2seq_request_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.queue = Gauge("seq2seq_queue_texts", "Texts waiting to be decoded", registry=r)
        self.batch_sentences = Histogram(
            "seq2seq_batch_sentences",
            "Texts per batched decode call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.padding = Histogram(
            "seq2seq_batch_padding_share",
            "Share of the decoded source positions that were padding",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.decode_seconds = Histogram("seq2seq_decode_seconds", "Time of one batched decode", registry=r)
        self.decode_calls = Counter("seq2seq_decoder_calls", "Compiled decoder calls", registry=r)
        self.rejections = Counter("seq2seq_rejections", "Requests refused or dropped", ["reason"], registry=r)


class _Asgi:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware would wrap `receive` and hide
    a client's disconnect from the batcher). It reads each request's body before the app
    sees it: over `max_body_bytes` (declared or sent) is 413 without reading the rest, not
    all of it within `body_timeout_s` is 408 (uvicorn has no such timeout: a client that
    stops sending would hold its request forever); both close the connection."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int, body_timeout_s: float = 5.0) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "/static" if path.startswith("/static/") else "other"
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            try:
                body = await self._body(scope, receive)
            except ApiError as error:  # the rest of the body is not read: the connection closes
                response = error_response(error.status, error.code, error.message, None, {"Connection": "close"})
                await response(scope, receive, send_with_headers)
                self.metrics.rejections.labels(error.code).inc()
                return
            if body is None:  # the client left while sending: no one to answer
                status = 499
                self.metrics.rejections.labels("disconnected").inc()
                return
            await self.app(scope, _replay(body, receive), send_with_headers)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    async def _body(self, scope, receive) -> bytes | None:
        """The request's body, or None when the client disconnected before sending all of
        it; `ApiError` 413 when it is (or is declared) larger than allowed, 408 when it did
        not all arrive within `body_timeout_s`."""
        too_large = ApiError(413, "body_too_large", f"the body is over {self.max_body_bytes} bytes")
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise too_large
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                message = f"the body did not arrive within {self.body_timeout_s:g} s ({size} bytes came)"
                raise ApiError(408, "body_timeout", message) from None
            if message["type"] != "http.request":  # disconnected while sending
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                raise too_large
            more = message.get("more_body", False)
        return b"".join(chunks)


def client_gone(receive: Callable[[], Awaitable[dict]]) -> Callable[[], bool]:
    """Whether the client of a request whose body was read has disconnected, answered at
    once: one step of `receive`, which then has only "http.disconnect" to give (uvicorn
    gives it at once when the client has gone, else waits). Starlette's
    `Request.is_disconnected` asks the same through a cancelled await, one event-loop
    round per request; in the batcher that cost 10% of the throughput
    (docs/performance.md)."""

    def gone() -> bool:
        try:
            step = receive()
            try:
                step.send(None)
            except StopIteration as finished:
                message = finished.value
                return isinstance(message, dict) and message.get("type") == "http.disconnect"
        except Exception:  # a receive that fails has no client behind it
            return True
        with contextlib.suppress(Exception):  # a quirk of closing must not stop the batcher
            step.close()  # it waits for a message: the client is still there
        return False

    return gone


def _replay(body: bytes, receive):
    """A `receive` that gives the body read already, then the client's own messages."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# ---------------------------------------------------------------------------- requests


def _whole(value: Any) -> Any:
    """JSON Schema counts 1.0 as an integer (and clients may write one): take it as 1; not
    1.5, "1" or true, which strict validation refuses."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_whole)]


class SampleIn(BaseModel):
    """Sampling instead of greedy decoding or beam search."""

    model_config = ConfigDict(extra="forbid", strict=True)
    temperature: float = Field(1.0, gt=0, le=100)
    top_k: Integer | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: Integer = Field(0, ge=0, lt=2**31)


class TranslateIn(BaseModel):
    """`POST /v1/translate`: one text or a list of texts, and how to decode them."""

    model_config = ConfigDict(extra="forbid", strict=True)
    q: str | list[str] = Field(description="a text (one result) or a list of texts (a list of results)")
    beam: Integer = Field(1, ge=1, description="beam size; 1: greedy")
    n_best: Integer = Field(1, ge=1, description="hypotheses per text, at most the beam size")
    sample: SampleIn | None = Field(None, description="sample instead, with beam 1 only")
    return_attention: bool = False
    return_tokens: bool = False


class LibreTranslateIn(BaseModel):
    """`POST /translate`, as LibreTranslate takes it."""

    model_config = ConfigDict(extra="ignore", strict=True)  # strict: "alternatives": "2" is refused as documented
    q: str | list[str]
    source: str = "auto"
    target: str
    format: str = "text"
    alternatives: Integer = Field(0, ge=0)
    api_key: str | None = None


# ---------------------------------------------------------------------------- answers, as documented
# What the OpenAPI document says each answer holds (the routes return dicts; these are not
# applied to them, but the fuzzing test checks every answer against them).


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Answer):
    code: str = Field(description="what went wrong: malformed_json, invalid_field, queue_full, ...")
    message: str
    param: str | None = Field(description="the request field at fault, dotted (q.1, sample.top_k), or null")


class ErrorOut(_Answer):
    """Every error, with a status of 400 or more."""

    error: ErrorDetail


class HypothesisOut(_Answer):
    text: str
    score: float | None = Field(description="log-probability; null for greedy decoding")


class TokensOut(_Answer):
    source: list[str]
    target: list[str]


class TranslationOut(_Answer):
    text: str
    score: float | None = Field(description="log-probability; null for greedy decoding")
    n_best: list[HypothesisOut]
    tokens: TokensOut | None = Field(None, description="with return_tokens or return_attention")
    attention: list[list[float]] | None = Field(None, description="with return_attention: a row per target token")


class TimingOut(_Answer):
    queue_ms: float
    decode_ms: float
    batch_size: int = Field(description="texts in the decode call this request was part of")


class TranslateOut(_Answer):
    translations: TranslationOut | list[TranslationOut] = Field(description="one per text; a list when q is")
    timing: TimingOut


class DetectedOut(_Answer):
    confidence: float
    language: str


class LibreTranslateOut(_Answer):
    translatedText: str | list[str]
    alternatives: list[str] | list[list[str]] | None = None
    detectedLanguage: DetectedOut | list[DetectedOut] | None = None


class LanguageOut(_Answer):
    code: str
    name: str
    targets: list[str]


class StatusOut(_Answer):
    status: str
    warmup_s: float | None = None


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "string"}}}
_ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "malformed_json: the body is not a JSON object; unsupported_language (/translate)"},
    401: {"description": "unauthorized: the server has an API key and the request no valid one"},
    408: {"description": "body_timeout: the body did not all arrive within body_timeout_s"},
    413: {"description": "body_too_large: the body is over max_body_bytes"},
    422: {"description": "invalid_field: a field missing, of the wrong type, or past a limit; param names it"},
    429: {"description": "queue_full: too many texts wait to be decoded", "headers": _RETRY_AFTER},
    503: {"description": "not_ready (warming up) or shutting_down", "headers": _RETRY_AFTER},
    504: {"description": "deadline_exceeded: not answered within timeout_s"},
}


def _answers(model: Any, *errors: int) -> dict[int | str, dict[str, Any]]:
    """The documented answers of a route: `model` with 200, `errors` in the one error shape."""
    answers: dict[int | str, dict[str, Any]] = {} if model is None else {200: {"model": model}}
    return answers | {status: {**_ERRORS[status], "model": ErrorOut} for status in errors}


def _document_limits(schemas: dict[str, Any], settings: ServerSettings) -> None:
    """Write the limits of `settings` into the request schemas of the OpenAPI document, so
    that what it allows is what the server takes; but for n_best <= beam and sampling only
    without beam search, which JSON Schema cannot say (the descriptions do)."""
    text = {"type": "string", "maxLength": settings.max_chars}
    q = {"anyOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": settings.max_texts}]}
    translate = schemas["TranslateIn"]["properties"]
    translate["q"] |= q
    translate["beam"]["maximum"] = settings.max_beam
    translate["n_best"]["maximum"] = min(settings.max_n_best, settings.max_beam)
    libre = schemas["LibreTranslateIn"]["properties"]
    libre["q"] |= q
    libre["alternatives"]["maximum"] = min(settings.max_beam, settings.max_n_best) - 1
    libre["source"]["enum"] = ["auto", settings.source_lang]
    libre["target"]["enum"] = [settings.target_lang]


def _finite(score: float) -> float | None:
    return score if math.isfinite(score) else None


# ---------------------------------------------------------------------------- the app


def create_app(model_dir: str | Path, settings: ServerSettings | None = None, system=None) -> FastAPI:
    """The app serving the model in `model_dir` (loaded now, once; or `system`, a loaded
    `Seq2Seq` of that directory, as the tests pass). Decoders compile at start-up, in the
    worker thread, and /readyz answers 503 until they have."""
    from .api import Seq2Seq, row_buckets
    from .decoding import DecodingOptions

    settings = settings or ServerSettings()
    model_dir = Path(model_dir)
    system = system or Seq2Seq.load(model_dir)
    metrics = Metrics()
    state: dict[str, Any] = {"ready": False, "warmup_s": None}

    def decode(groups: list[list[str]], key: tuple, return_attention: bool):
        return system.decode(groups, key[0], return_attention)

    batcher = Batcher(
        decode,
        window_s=settings.batch_window_ms / 1000,
        max_sentences=settings.max_batch_sentences,
        max_tokens=settings.max_batch_tokens,
        max_queue=settings.max_queue,
        metrics=metrics,
        row_buckets=row_buckets(settings.max_batch_sentences),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()

        async def warm() -> None:
            started = time.perf_counter()
            await batcher.run_in_worker(warm_up, system, settings, model_dir)
            state["warmup_s"] = round(time.perf_counter() - started, 3)
            # the model and compiled programs are ~630k objects the collector would
            # otherwise walk in every full collection (~400 ms each, stalling every request)
            gc.collect()  # what warm-up left as garbage is not frozen with them
            gc.freeze()
            state["ready"] = True

        if settings.warmup:
            warming = asyncio.get_running_loop().create_task(warm())
        else:
            state.update(ready=True, warmup_s=0.0)
            warming = asyncio.get_running_loop().create_task(asyncio.sleep(0))
        try:
            yield
        finally:
            warming.cancel()
            await batcher.close()  # what is queued is decoded before the worker stops

    app = FastAPI(
        title="seq2seq",
        version=__version__,
        description="Translate with an LSTM encoder-decoder model trained by `seq2seq train`.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's Swagger UI loads from a CDN: /docs is served from the package instead
        redoc_url=None,
    )
    app.state.batcher = batcher
    app.state.system = system
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.ready = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.param, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        first = problems[0] if problems else {}
        if first.get("type") == "json_invalid":
            return error_response(400, "malformed_json", f"the body is not valid JSON: {first.get('msg', '')}")
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        if not location and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
            return error_response(400, "malformed_json", "the body must be a JSON object (application/json)")
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in problems)
        return error_response(422, "invalid_field", message, ".".join(location) or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # 400: FastAPI's "There was an error parsing the body" (a JSON body not in UTF-8)
        codes = {400: "malformed_json", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        message = "the body is not JSON in UTF-8, or nests too deeply" if error.status_code == 400 else error.detail
        return error_response(error.status_code, codes.get(error.status_code, "http_error"), str(message))

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, "internal", f"{type(error).__name__}: {error}")

    def authorize(request: Request) -> None:
        """With --api-key: `Authorization: Bearer KEY` (constant-time comparison)."""
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("api_key", "")
        if not same_key(given):
            metrics.rejections.labels("unauthorized").inc()
            raise ApiError(401, "unauthorized", "a valid API key is needed", None, {"WWW-Authenticate": "Bearer"})

    async def require_key(request: Request) -> None:
        """`authorize` as an async dependency: FastAPI runs a plain `def` dependency in its
        thread pool, and that hand-off took about half of the event loop's busy time under
        32 concurrent clients."""
        authorize(request)

    def same_key(given: str) -> bool:
        """Constant-time; "surrogatepass": a key in JSON may hold lone surrogates."""
        assert settings.api_key is not None
        encoded = settings.api_key.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), encoded)

    def options_for(beam: int, n_best: int, sample: SampleIn | None) -> DecodingOptions:
        if beam > settings.max_beam:
            raise ApiError(422, "invalid_field", f"beam is at most {settings.max_beam}, got {beam}", "beam")
        if n_best > settings.max_n_best:
            raise ApiError(422, "invalid_field", f"n_best is at most {settings.max_n_best}, got {n_best}", "n_best")
        if n_best > beam:
            raise ApiError(422, "invalid_field", f"n_best ({n_best}) cannot exceed beam ({beam})", "n_best")
        if sample is not None and beam > 1:
            raise ApiError(422, "invalid_field", "choose sampling or beam search, not both", "sample")
        batch_size = settings.max_batch_sentences
        if sample is None:
            return DecodingOptions(beam=beam, n_best=n_best, batch_size=batch_size)
        return DecodingOptions(
            sample=True,
            batch_size=batch_size,
            **sample.model_dump(),  # temperature, top_k, top_p, seed
        )

    def texts_of(q: str | list[str]) -> list[str]:
        texts = [q] if isinstance(q, str) else q
        if not texts:
            raise ApiError(422, "invalid_field", "q holds no text", "q")
        if len(texts) > settings.max_texts:
            raise ApiError(422, "invalid_field", f"at most {settings.max_texts} texts, got {len(texts)}", "q")
        for i, text in enumerate(texts):
            param = "q" if isinstance(q, str) else f"q.{i}"
            if len(text) > settings.max_chars:
                message = f"a text is at most {settings.max_chars} characters, got {len(text)}"
                raise ApiError(422, "invalid_field", message, param)
            if _unicode(text) != text:  # its tokens could not be answered in UTF-8
                raise ApiError(422, "invalid_field", "a text holds a lone surrogate (\\ud800 to \\udfff)", param)
        return texts

    async def run(request: Request, texts: list[str], options: DecodingOptions, attention: bool) -> BatchResult:
        if not state["ready"]:
            metrics.rejections.labels("not_ready").inc()
            raise ApiError(503, "not_ready", "the model is warming up", None, {"Retry-After": "1"})
        # a sampled request is never merged: its draws depend on its batch and row
        key = (options, object()) if options.sample else (options,)
        tokens = sum(len(ids) for ids in system.encode(texts))
        try:
            return await batcher.submit(
                texts, key, tokens, settings.timeout_s, attention, gone=client_gone(request.receive)
            )
        except QueueFull as error:
            metrics.rejections.labels("queue_full").inc()
            retry = max(1, math.ceil(batcher.queued / max(settings.max_batch_sentences, 1) * 0.1))
            raise ApiError(429, "queue_full", str(error), None, {"Retry-After": str(retry)}) from None
        except DeadlineExceeded as error:
            metrics.rejections.labels("deadline").inc()
            raise ApiError(504, "deadline_exceeded", str(error)) from None
        except NotRunning as error:
            raise ApiError(503, "shutting_down", str(error), None, {"Retry-After": "1"}) from None

    body_errors = (400, 401, 408, 413, 422, 429, 503, 504)

    @app.post(
        "/v1/translate",
        dependencies=[Depends(require_key)],
        summary="Translate one text or a list",
        response_model=None,
        responses=_answers(TranslateOut, *body_errors),
    )
    async def translate(body: TranslateIn, request: Request) -> dict:
        texts = texts_of(body.q)
        options = options_for(body.beam, body.n_best, body.sample)
        if body.return_attention and system.config.attention == "none":
            raise ApiError(422, "invalid_field", "this model has no attention", "return_attention")
        result = await run(request, texts, options, body.return_attention)
        translations = []
        for output in result.outputs:
            item: dict[str, Any] = {
                "text": output.text,
                "score": _finite(output.score),
                "n_best": [{"text": text, "score": _finite(score)} for text, score in output.n_best],
            }
            if body.return_tokens or body.return_attention:
                item["tokens"] = {"source": output.source_tokens, "target": output.target_tokens}
            if body.return_attention:
                item["attention"] = [[round(float(w), 5) for w in row] for row in output.attention]
            translations.append(item)
        timing = {
            "queue_ms": round(result.queue_ms, 3),
            "decode_ms": round(result.decode_ms, 3),
            "batch_size": result.batch_size,
        }
        return {"translations": translations[0] if isinstance(body.q, str) else translations, "timing": timing}

    def libre_authorize(request: Request, body: LibreTranslateIn) -> None:
        if settings.api_key is not None and body.api_key is not None and same_key(body.api_key):
            return  # LibreTranslate's clients send the key in the body
        authorize(request)

    @app.post(
        "/translate",
        summary="LibreTranslate-compatible translation",
        response_model=None,
        responses=_answers(LibreTranslateOut, *body_errors),
    )
    async def libretranslate(body: LibreTranslateIn, request: Request) -> dict:
        libre_authorize(request, body)
        if body.source not in ("auto", settings.source_lang):
            raise ApiError(400, "unsupported_language", f"source must be {settings.source_lang} or auto", "source")
        if body.target != settings.target_lang:
            raise ApiError(400, "unsupported_language", f"target must be {settings.target_lang}", "target")
        texts = texts_of(body.q)
        n = body.alternatives + 1
        options = options_for(n, n, None) if n > 1 else options_for(1, 1, None)
        result = await run(request, texts, options, False)
        translated = [o.text for o in result.outputs]
        answer: dict[str, Any] = {"translatedText": translated[0] if isinstance(body.q, str) else translated}
        if body.alternatives:
            alternatives = [[text for text, _ in o.n_best[1:]] for o in result.outputs]
            answer["alternatives"] = alternatives[0] if isinstance(body.q, str) else alternatives
        if body.source == "auto":
            detected = {"confidence": 100.0, "language": settings.source_lang}
            answer["detectedLanguage"] = detected if isinstance(body.q, str) else [detected] * len(texts)
        return answer

    @app.get(
        "/languages",
        dependencies=[Depends(require_key)],
        summary="LibreTranslate-compatible languages",
        response_model=None,
        responses=_answers(list[LanguageOut], 401),
    )
    async def languages() -> list:
        return [{"code": settings.source_lang, "name": settings.source_lang, "targets": [settings.target_lang]}]

    @app.get(
        "/v1/info",
        dependencies=[Depends(require_key)],
        summary="The model, its scores and the limits",
        responses=_answers(None, 401),
    )
    async def info() -> dict:
        import keras

        scores = None
        evaluation = model_dir / EVALUATION_FILE
        if evaluation.is_file():
            with contextlib.suppress(OSError, ValueError):
                scores = json.loads(evaluation.read_text(encoding="utf-8"))
        return {
            "version": __version__,
            "settings": system.config.to_dict(),
            "vocabulary": {"source": len(system.source), "target": len(system.target)},
            "attention": system.config.attention != "none",
            "test_scores": scores,
            "limits": settings.limits(),
            "languages": {"source": settings.source_lang, "target": settings.target_lang},
            "backend": keras.backend.backend(),
            "device": _device(),
            "products": "bfloat16" if system.parts.bfloat16_products else "float32",
            "ready": state["ready"],
            "warmup_s": state["warmup_s"],
            "auth": settings.api_key is not None,
        }

    @app.get("/healthz", summary="Alive", response_model=None, responses=_answers(StatusOut))
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Ready: 503 until the decoders are compiled",
        response_model=None,
        responses=_answers(StatusOut, 503),
    )
    async def readyz() -> dict:
        if not state["ready"]:
            raise ApiError(503, "not_ready", "the model is warming up", None, {"Retry-After": "1"})
        return {"status": "ready", "warmup_s": state["warmup_s"]}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _document_limits(FastAPI.openapi(app)["components"]["schemas"], settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        _Asgi, metrics=metrics, max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout_s
    )
    return app


def _device() -> str:
    try:
        import jax

        device = jax.devices()[0]
        return f"{device.platform}:{device.device_kind}"
    except Exception:  # another backend, or no device query
        return "unknown"


def warm_up(system, settings: ServerSettings, model_dir: str | Path | None = None) -> int:
    """Compile the decoders requests will use: greedy decoding for every batch size bucket
    (8, 16, ... up to `max_batch_sentences`) and every (source length bucket, output
    limit) of sources up to the longest the model was trained on (at most
    `warmup_max_length`); the page's beam search (beam 4, 3 best) and the attention pass
    for one batch size. Returns the number of shapes run. Runs in the worker thread."""
    from .api import SPLIT_DIR, row_buckets
    from .batches import padded_length
    from .decoding import DecodingOptions

    options = DecodingOptions(batch_size=settings.max_batch_sentences)
    longest = settings.warmup_max_length
    with contextlib.suppress(OSError, ValueError):
        from .data import read_pairs

        if model_dir is not None:
            pairs = read_pairs(Path(model_dir) / SPLIT_DIR / "train.tsv")
            longest = min(longest, max(len(ids) for ids in system.encode([p.source for p in pairs])))
    shapes, seen = 0, set()
    max_length = system.max_length
    rows = row_buckets(settings.max_batch_sentences)
    for n in range(1, longest + 1):
        shape = (padded_length(n), system.output_limit(n, max_length))
        if shape in seen:
            continue
        seen.add(shape)
        text_ids = [[4] * n]  # any ordinary token: the shapes are what compiles
        for count in rows:
            system.generate(text_ids * count, options)
            shapes += 1
        beam = DecodingOptions(beam=min(4, settings.max_beam), n_best=min(3, settings.max_n_best), batch_size=64)
        system.generate(text_ids, beam)
        if system.config.attention != "none":
            system.forced_attention(text_ids, [[4] * min(n, shape[1])])
        shapes += 2
    with contextlib.suppress(Exception):
        from .backend import release_freed_memory

        release_freed_memory()  # compiling frees much in small pieces: hand it back
    return shapes


def serve(model_dir: str | Path, settings: ServerSettings) -> None:
    """Run the app with uvicorn until SIGINT or SIGTERM; on either, what is queued is
    decoded and answered before the process exits."""
    import uvicorn

    app = create_app(model_dir, settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=os.environ.get("SEQ2SEQ_LOG_LEVEL", "info"),
        timeout_graceful_shutdown=int(settings.timeout_s) + 5,
        access_log=False,
    )


__all__ = ["Batcher", "Metrics", "ServerSettings", "create_app", "serve", "warm_up"]
