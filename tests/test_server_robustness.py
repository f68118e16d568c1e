"""`seq2seq serve` against what clients may send (issue 23): the API fuzzed from its own
OpenAPI document with schemathesis, in-process; then a real server on loopback with bodies
too large, bodies that never arrive, more requests than its queue holds, and a short soak
of mixed requests watching its memory (bench/serve_soak.py)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from seq2seq import Seq2Seq
from seq2seq.cli import SERVE_OPTIONS
from seq2seq.decoding import DecodingOptions
from seq2seq.server import ServerSettings, create_app

from .conftest import bench_module
from .test_server import app_for, assert_error, client_of, run, trained_model_dir

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extras")
hypothesis = pytest.importorskip("hypothesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ERROR_KEYS = {"code", "message", "param"}


@pytest.fixture(scope="module")
def system() -> Seq2Seq:
    return Seq2Seq.load(trained_model_dir())


# ---------------------------------------------------------------------------- fuzzing from the OpenAPI document

# Small limits keep the shapes to compile few (texts of at most 8 characters: two source
# lengths; beam 2: two beam decoders; two sampling settings), so the fuzzing takes seconds.
FUZZ_SETTINGS = dict(
    warmup=False,
    batch_window_ms=1.0,
    max_texts=4,
    max_chars=8,
    max_beam=2,
    max_n_best=2,
    max_body_bytes=20_000,
)
EXAMPLES = 40  # per operation and generation mode


def error_shape(ctx, response, case) -> None:
    """Our invariant: every answer of 400 or more is `{"error": {"code", "message", "param"}}`;
    an answer under 400 is 200 and never holds an error."""
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
        assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
    else:
        assert response.status_code == 200, response.status_code
        if response.headers.get("content-type", [""])[0].startswith("application/json"):
            body = json.loads(response.content)
            assert not (isinstance(body, dict) and "error" in body), body


def accepted_when_valid(ctx, response, case) -> None:
    """A request the document allows is answered 200, but for what JSON Schema cannot say:
    n_best over beam, sampling with beam over 1."""
    if response.status_code == 200:
        return
    error = json.loads(response.content)["error"]
    body = case.body if isinstance(case.body, dict) else {}
    beam, n_best = body.get("beam", 1), body.get("n_best", 1)
    if error["param"] == "n_best" and n_best > beam:
        return
    if error["param"] == "sample" and beam > 1:
        return
    raise AssertionError(f"a valid request answered {response.status_code}: {error}")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance]
CHECKS += [response_schema_conformance, error_shape]
CHECKS_OF = {GenerationMode.POSITIVE: [*CHECKS, accepted_when_valid], GenerationMode.NEGATIVE: [*CHECKS]}
CHECKS_OF[GenerationMode.NEGATIVE].append(negative_data_rejection)


def fuzz(app, examples: int) -> tuple[collections.Counter, list[str]]:
    """Every operation of the app's OpenAPI document with `examples` requests the document
    allows and `examples` it does not, each answer checked; returns how many answers of each
    (operation, mode, status) there were and the failures."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,  # the same requests each run
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case, mode: GenerationMode) -> None:
        response = case.call()
        label = case.operation.label
        statuses[label, mode.value, response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS_OF[mode])
        except Exception as failure:  # all of them, not only the first
            failures.append(f"{label} ({mode.value}): {failure}\n{case.as_curl_command()}")

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: collections.Counter = collections.Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = result.ok().as_strategy(generation_mode=mode)
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # no parameters: no invalid requests
                given(case=strategy, mode=st.just(mode))(check)()
    return statuses, failures


def test_fuzzed_from_the_openapi_document(system):
    app = create_app(trained_model_dir(), ServerSettings(**FUZZ_SETTINGS), system=system)
    started = time.perf_counter()
    try:
        statuses, failures = fuzz(app, EXAMPLES)
    finally:
        from schemathesis.python import asgi

        asgi.shutdown_lifespans()  # the app's lifespan, started by schemathesis's client
    summary = ", ".join(f"{op} {mode} {status}: {n}" for (op, mode, status), n in sorted(statuses.items()))
    print(f"fuzzed in {time.perf_counter() - started:.1f} s: {summary}")
    assert not failures, "\n\n".join(failures[:5])
    # both translation endpoints did translate, and refused what they should
    for operation in ("POST /v1/translate", "POST /translate"):
        assert statuses[operation, "positive", 200] > EXAMPLES // 3, statuses
        assert sum(n for (op, mode, _), n in statuses.items() if op == operation and mode == "negative") > 0


def test_the_document_states_the_limits_and_the_error_shape(system):
    app = app_for(trained_model_dir(), system, max_texts=3, max_chars=10, max_beam=4, max_n_best=3)
    document = app.openapi()
    schemas = document["components"]["schemas"]
    translate = schemas["TranslateIn"]["properties"]
    text, texts = translate["q"]["anyOf"]
    assert text["maxLength"] == texts["items"]["maxLength"] == 10 and (texts["minItems"], texts["maxItems"]) == (1, 3)
    assert (translate["beam"]["maximum"], translate["n_best"]["maximum"]) == (4, 3)
    libre = schemas["LibreTranslateIn"]["properties"]
    assert libre["alternatives"]["maximum"] == 2 and libre["target"]["enum"] == ["tgt"]
    assert "HTTPValidationError" not in schemas  # FastAPI's {"detail": [...]}, which the server never answers
    answers = document["paths"]["/v1/translate"]["post"]["responses"]
    assert {"400", "401", "408", "413", "422", "429", "503", "504"} <= set(answers)
    assert answers["422"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorOut"
    assert schemas["ErrorOut"]["required"] == ["error"] and set(schemas["ErrorDetail"]["required"]) == ERROR_KEYS
    assert "Retry-After" in answers["429"]["headers"]
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


# Regressions for what the fuzzing found (each failed before its fix in server.py).


def test_lone_surrogates_are_422_not_500(system):
    """JSON may escape a lone surrogate ("\\ud800"), which UTF-8 cannot encode: an API key
    holding one in the body of /translate was a 500 (UnicodeEncodeError), and so was a text
    holding one answered with return_tokens (its source tokens) where the codec kept it.
    Texts are refused with it; a field named with one Pydantic refuses."""

    async def main():
        async with client_of(app_for(trained_model_dir(), system, api_key="s3cret")) as client:
            kind = {"content-type": "application/json"}
            headers = {**kind, "authorization": "Bearer s3cret"}
            post = client.post
            return [
                await post("/v1/translate", content=rb'{"q": "\ud800ab", "return_tokens": true}', headers=headers),
                await post("/v1/translate", content=rb'{"q": ["ab", "c\udfffd"]}', headers=headers),
                await post("/v1/translate", content=rb'{"q": "ab", "\ud800": 1}', headers=headers),
                await post("/translate", content=rb'{"q": "a", "target": "tgt", "api_key": "\ud800"}', headers=kind),
                await post("/translate", content=rb'{"q":"\udc80","target":"tgt","api_key":"s3cret"}', headers=kind),
            ]

    answers = run(main())
    assert_error(answers[0], 422, "invalid_field", "q")
    assert_error(answers[1], 422, "invalid_field", "q.1")
    assert_error(answers[2], 422, "invalid_field")
    assert_error(answers[3], 401, "unauthorized")
    assert_error(answers[4], 422, "invalid_field", "q")


def test_integers_as_json_schema_has_them_and_bodies_fastapi_cannot_parse(system):
    """1.0 is an integer to JSON Schema, which the document promises: beam 2.0 was a 422
    (strict validation), while "2", true and 1.5 stay refused; /translate took "alternatives":
    "1" (lax validation) against its document. A body that is not UTF-8, or nests deeper
    than Python's JSON parser goes, was 400 with the code "http_error"."""

    async def main():
        async with client_of(app_for(trained_model_dir(), system)) as client:
            post = client.post
            json_headers = {"content-type": "application/json"}
            return [
                await post("/v1/translate", json={"q": "abc", "beam": 2.0, "n_best": 2.0}),
                await post("/v1/translate", json={"q": "abc", "sample": {"top_k": 3.0, "seed": 1.0}}),
                await post("/translate", json={"q": "abc", "target": "tgt", "alternatives": 1.0}),
                await post("/v1/translate", json={"q": "abc", "beam": 1.5}),
                await post("/v1/translate", json={"q": "abc", "beam": "2"}),
                await post("/v1/translate", json={"q": "abc", "beam": True}),
                await post("/translate", json={"q": "abc", "target": "tgt", "alternatives": "1"}),
                await post("/v1/translate", content=b'{"q": "\xff\xfe"}', headers=json_headers),
                await post("/v1/translate", content=b"[" * 100_000 + b"]" * 100_000, headers=json_headers),
                await post("/v1/translate", content=b'{"q": "ab"}', headers={"content-type": "text/plain"}),
            ]

    answers = run(main())
    assert [a.status_code for a in answers[:3]] == [200, 200, 200], [a.text for a in answers[:3]]
    assert len(answers[0].json()["translations"]["n_best"]) == 2
    assert len(answers[2].json()["alternatives"]) == 1
    for answer, param in zip(answers[3:7], ["beam", "beam", "beam", "alternatives"], strict=True):
        assert_error(answer, 422, "invalid_field", param)
    for answer in answers[7:]:
        assert_error(answer, 400, "malformed_json")


def test_any_number_of_sampling_settings_share_one_compiled_sampler(system):
    """Sampling settings were compiled into the decoders (about 4 s and ~9 MiB each, so a
    server bounded their number). They are inputs now: new settings compile nothing, and
    each answer is what `Seq2Seq.translate` gives with those settings."""
    chosen = ((1.5, 3, None), (0.5, None, 0.9), (2.0, 1, 0.5))
    settings = [{"temperature": t, "top_k": k, "top_p": p} for t, k, p in chosen]

    async def main():
        async with client_of(app_for(trained_model_dir(), system)) as client:
            answers = []
            for setting in settings:
                answers.append(await client.post("/v1/translate", json={"q": "abcd", "sample": {**setting, "seed": 7}}))
                answers.append(len(system._decoders))
            return answers

    answers = run(main())
    assert answers[1] == answers[3] == answers[5]  # no decoder compiled for the second and third settings
    for setting, answer in zip(settings, answers[::2], strict=True):
        assert answer.status_code == 200, answer.text
        options = DecodingOptions(sample=True, seed=7, batch_size=ServerSettings().max_batch_sentences, **setting)
        assert answer.json()["translations"]["text"] == system.translate(["abcd"], options)[0]


def translate_scope(content_length: int) -> dict:
    """The ASGI scope uvicorn gives a JSON POST to /v1/translate."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/translate",
        "raw_path": b"/v1/translate",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(content_length).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def test_a_client_that_leaves_while_queued_is_dropped_and_the_others_answered(system):
    """Driven through the middleware as uvicorn would: one client disconnects while its
    request waits in the batching window, another stays; only the second is decoded."""
    app = app_for(trained_model_dir(), system, batch_window_ms=300)
    decoded: list[list[list[str]]] = []

    async def exchange(text: str, leave_after_s: float | None) -> list[dict]:
        body = json.dumps({"q": text}).encode()
        scope = translate_scope(len(body))
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        loop = asyncio.get_running_loop()
        leaves_at = loop.time() + (leave_after_s if leave_after_s is not None else 3600)

        async def receive() -> dict:  # as uvicorn's: at once when the client has gone, else when it goes
            if messages:
                return messages.pop(0)
            if loop.time() < leaves_at:
                await asyncio.sleep(leaves_at - loop.time())
            return {"type": "http.disconnect"}

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), 10)
        return sent

    async def main():
        async with app.router.lifespan_context(app):
            decode = app.state.batcher.decode
            app.state.batcher.decode = lambda groups, *rest: decoded.append(groups) or decode(groups, *rest)
            return await asyncio.gather(exchange("abc", 0.05), exchange("dcba", None), return_exceptions=True)

    left, stayed = run(main())
    assert decoded == [[["dcba"]]]
    assert stayed[0]["status"] == 200
    assert json.loads(stayed[1]["body"])["translations"]["text"] == system.translate(["dcba"])[0]
    assert isinstance(left, asyncio.CancelledError) or left == []  # nothing is sent to a client that left
    assert app.state.metrics.rejections.labels("disconnected")._value.get() == 1


def test_body_read_408_and_disconnect_in_process(system):
    """The middleware reading bodies, driven message by message: a body that stops coming
    is 408 after body_timeout_s (it waited forever before); a client that leaves while
    sending gets nothing and is counted as 499, the app never called with half a body."""
    app = app_for(trained_model_dir(), system, body_timeout_s=0.3)
    scope = translate_scope(100)

    async def exchange(then: str) -> tuple[list[dict], float]:
        messages: list[dict] = [{"type": "http.request", "body": b'{"q": "ab', "more_body": True}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            if then == "disconnect":
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)  # the rest never comes
            raise AssertionError("not reached")

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        started = time.perf_counter()
        await asyncio.wait_for(app(scope, receive, send), 10)
        return sent, time.perf_counter() - started

    async def main():
        async with app.router.lifespan_context(app):
            return await exchange("stall"), await exchange("disconnect")

    (stalled, seconds), (left, _) = run(main())
    assert stalled[0]["status"] == 408 and 0.3 <= seconds < 3
    assert (b"connection", b"close") in stalled[0]["headers"]
    assert json.loads(stalled[1]["body"])["error"]["code"] == "body_timeout"
    assert left == []
    counted = [app.state.metrics.requests.labels("/v1/translate", status)._value.get() for status in ("408", "499")]
    assert counted == [1, 1]
    assert app.state.metrics.rejections.labels("body_timeout")._value.get() == 1


# ---------------------------------------------------------------------------- a real server on loopback

# --body-timeout-s is cli.py's to add (SERVE_OPTIONS); until it has, the default applies
BODY_TIMEOUT_S = 1.5 if "body_timeout_s" in SERVE_OPTIONS else ServerSettings().body_timeout_s
MAX_BODY = 4096
MAX_QUEUE = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[subprocess.Popen, str]]:
    from .test_page import start_server

    options = ["--no-warmup", "--max-queue", str(MAX_QUEUE), "--batch-window-ms", "100"]
    options += ["--max-body-bytes", str(MAX_BODY), "--timeout-s", "30"]
    if "body_timeout_s" in SERVE_OPTIONS:
        options += ["--body-timeout-s", str(BODY_TIMEOUT_S)]
    process, url = start_server(tmp_path_factory.mktemp("robust") / "serve.log", *options)
    try:
        for body in ({"q": "abc"}, {"q": ["abcd", "dcba", "ab", "ba"]}):  # compile the shapes the tests use
            assert httpx.post(url + "/v1/translate", json=body, timeout=120).status_code == 200
        yield process, url
    finally:
        process.terminate()
        process.wait(60)


def exchange(url: str, head: bytes, parts: list[bytes] = (), pause: float = 0.0, timeout: float = 30.0) -> dict:
    """Send `head` on a raw connection, then `parts` one by one `pause` s apart (in a thread,
    so the answer is read while they go); read until the server closes the connection."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    started = time.monotonic()
    stop = threading.Event()

    def trickle() -> None:
        for part in parts:
            if stop.wait(pause):
                return
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed
                return

    sock.sendall(head)
    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    data, closed = b"", False
    try:
        while chunk := sock.recv(65536):
            data += chunk
        closed = True
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass
    elapsed = time.monotonic() - started
    stop.set()
    sender.join(5)
    sock.close()
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    status = int(lines[0].split()[1]) if lines[0] else None
    return {"status": status, "headers": headers, "body": body, "elapsed": elapsed, "closed": closed}


def post_head(length: int | None = None, chunked: bool = False) -> bytes:
    head = "POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {length}\r\n" if length is not None else ""
    head += "Transfer-Encoding: chunked\r\n" if chunked else ""
    return (head + "\r\n").encode()


def error_of(answer: dict, status: int, code: str) -> dict:
    assert answer["status"] == status, answer
    error = json.loads(answer["body"])["error"]
    assert set(error) == ERROR_KEYS and error["code"] == code, error
    return error


def test_oversized_bodies_are_413_without_being_read(server):
    _, url = server
    # declared: answered at once, the gigabyte never sent
    declared = exchange(url, post_head(10**9), [b'{"q": "' + b"a" * 100])
    # chunked, no length declared: refused once past the limit, the final chunk never sent
    chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
    chunked = exchange(url, post_head(chunked=True), [chunk] * 6, pause=0.05)
    plain = httpx.post(url + "/v1/translate", json={"q": "a" * (MAX_BODY + 10)}, timeout=30)
    for answer in (declared, chunked):
        error_of(answer, 413, "body_too_large")
        assert answer["closed"] and answer["elapsed"] < min(3.0, BODY_TIMEOUT_S), answer
        assert answer["headers"]["connection"] == "close"
    assert_error(plain, 413, "body_too_large")
    assert httpx.post(url + "/v1/translate", json={"q": "abc"}, timeout=30).status_code == 200


def test_bodies_that_stop_or_trickle_are_408_while_others_are_answered(server):
    _, url = server
    answers: dict = {}
    clients = {
        # headers, then 10 of the 60 bytes promised, then nothing
        "stalled": (post_head(60), [b'{"q": "abc'], 0.0),
        # a byte every 0.2 s: still coming, but not all of it within the deadline
        "trickled": (post_head(400), [b" "] * 400, 0.2),
    }
    threads = [
        threading.Thread(target=lambda name=name, args=args: answers.__setitem__(name, exchange(url, *args)))
        for name, args in clients.items()
    ]
    # and connections that never finish their headers (uvicorn times these out only
    # between requests, not before the first: they stay open, but cost no one else)
    idle = [socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) for _ in range(20)]
    for sock in idle:
        sock.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
    for thread in threads:
        thread.start()
    others = []
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + BODY_TIMEOUT_S + 1
            while time.monotonic() < deadline and len(others) < 200:
                started = time.monotonic()
                status = client.post("/v1/translate", json={"q": "abcd"}).status_code
                others.append((status, time.monotonic() - started))
                time.sleep(0.05)
    finally:
        for thread in threads:
            thread.join(BODY_TIMEOUT_S + 30)
        for sock in idle:
            sock.close()
    print(f"408s after {[round(a['elapsed'], 2) for a in answers.values()]} s; meanwhile {len(others)} others answered")
    for name in clients:
        answer = answers[name]
        error = error_of(answer, 408, "body_timeout")
        assert answer["closed"] and answer["headers"]["connection"] == "close", answer
        assert BODY_TIMEOUT_S - 0.2 < answer["elapsed"] < BODY_TIMEOUT_S + 5, answer
        assert f"{BODY_TIMEOUT_S:g} s" in error["message"]
    assert len(others) >= 5 and all(status == 200 for status, _ in others), others
    assert max(seconds for _, seconds in others) < 2.0, others


def test_past_the_queue_capacity_some_are_429_and_the_rest_answered(server):
    _, url = server
    texts = ["abcd", "dcba", "ab", "ba"]  # 4 texts a request: the queue holds 2 requests

    async def main():
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

            async def health() -> list[tuple[int, float]]:
                answers = []
                for _ in range(10):
                    started = time.perf_counter()
                    answers.append(((await client.get("/healthz")).status_code, time.perf_counter() - started))
                    await asyncio.sleep(0.05)
                return answers

            burst = [client.post("/v1/translate", json={"q": texts}) for _ in range(40)]
            *answers, healthz = await asyncio.wait_for(asyncio.gather(*burst, health()), 120)
            after = await client.post("/v1/translate", json={"q": "abc"})
            return answers, healthz, after

    answers, healthz, after = run(main())
    statuses = collections.Counter(answer.status_code for answer in answers)
    print(f"40 requests past a queue of {MAX_QUEUE} texts: {dict(statuses)}; /healthz {healthz}")
    assert set(statuses) == {200, 429}, statuses  # every request ended, with one or the other
    for answer in answers:
        if answer.status_code == 429:
            assert_error(answer, 429, "queue_full")
            assert int(answer.headers["retry-after"]) >= 1
        else:
            assert len(answer.json()["translations"]) == len(texts)
    assert all(status == 200 for status, _ in healthz) and max(s for _, s in healthz) < 2.0, healthz
    assert after.status_code == 200


def test_memory_stays_flat_over_a_short_soak(server):
    process, url = server
    soak = bench_module("serve_soak")
    texts = ["abc", "hgfedc", "ab", "gggh", "abcdefgh", "e"]  # lengths as the model was trained on, and longer
    report = asyncio.run(
        soak.soak(url, process.pid, clients=4, seconds=6.0, warmup_s=2.0, sample_every_s=1.0, texts=texts)
    )
    print(json.dumps(report))
    assert report["unexpected"] == {}, report
    assert report["requests"] > 50 and set(report["kinds"]) >= {"good", "invalid", "oversized", "beam", "attention"}
    assert report["growth"] <= soak.MAX_GROWTH, report
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
