"""`seq2seq serve`: every endpoint and error against a tiny trained model, and the batcher."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import gc
import math
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest

from seq2seq import Config, Seq2Seq
from seq2seq.cli import SERVE_OPTIONS, build_parser
from seq2seq.decoding import DecodingOptions
from seq2seq.model import build_model
from seq2seq.server import (
    Batcher,
    DeadlineExceeded,
    NotRunning,
    QueueFull,
    ServerSettings,
    _replay,
    client_gone,
    create_app,
)
from seq2seq.training import train

from .conftest import bench_module

# Reversing strings of 2-6 letters, with Luong attention (for the heatmap): about 20 s to
# train on two busy cores, and it reverses most held-out strings.
TINY = dict(
    data="builtin:reverse",
    num_samples=2000,
    level="char",
    input="embedding",
    embedding_dim=16,
    latent_dim=32,
    bidirectional=False,
    attention="luong",
    dropout=0.0,
    label_smoothing=0.0,
    tie_embeddings=False,
    epochs=8,
    batch_size=32,
    learning_rate=1e-2,
    patience=None,
    lr_patience=None,
    dev_bleu_sentences=0,
    stop_metric="loss",
)


@functools.lru_cache(maxsize=1)
def trained_model_dir() -> Path:
    """One tiny model per test process, shared by this file and test_page.py."""
    directory = Path(tempfile.mkdtemp(prefix="seq2seq-serve-")) / "model"
    atexit.register(shutil.rmtree, directory.parent, True)
    train(Config(**TINY), directory, verbose=0)
    return directory


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return trained_model_dir()


@pytest.fixture(scope="module")
def system(model_dir) -> Seq2Seq:
    return Seq2Seq.load(model_dir)


QUIET = dict(warmup=False, batch_window_ms=2.0)


@contextlib.asynccontextmanager
async def client_of(app):
    """An HTTP client talking to `app` in this event loop, with its start-up and shutdown run."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


def run(coroutine):
    return asyncio.run(coroutine)


def app_for(model_dir, system, **settings):
    return create_app(model_dir, ServerSettings(**{**QUIET, **settings}), system=system)


def assert_error(response: httpx.Response, status: int, code: str, param=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "param"}
    assert error["code"] == code
    assert error["message"]
    assert error["param"] == param
    return error


# ---------------------------------------------------------------------------- Seq2Seq.decode


def test_decode_gives_each_group_what_n_best_gives_it_alone(system):
    groups = [["abcde", "hgfa"], ["ab", "", "abcdefgh"], ["ggg"]]
    for options in (DecodingOptions(), DecodingOptions(beam=3, n_best=2), DecodingOptions(sample=True, seed=5)):
        decoded = system.decode(groups, options, return_attention=True)
        if not options.sample:
            assert decoded.calls == 1  # merged: one call for all three groups
        for group, outputs in zip(groups, decoded.outputs, strict=True):
            alone = system.n_best(group, options)
            assert [[t for t, _ in o.n_best] for o in outputs] == [[t for t, _ in h] for h in alone]
            for output, hypotheses in zip(outputs, alone, strict=True):
                np.testing.assert_allclose([s for _, s in output.n_best], [s for _, s in hypotheses], rtol=1e-5)
    # the attention of the greedy output is what Seq2Seq.attention gives
    output = system.decode([["abcde"]], return_attention=True).outputs[0][0]
    source_tokens, target_tokens, weights = system.attention("abcde")
    assert (output.source_tokens, output.target_tokens) == (source_tokens, target_tokens)
    np.testing.assert_allclose(output.attention, weights, atol=1e-5)


@pytest.mark.parametrize("trained", [True, False])
def test_decode_keeps_each_inputs_own_output_limit(system, trained):
    """With room to run (max_length 40), "ab" alone may run 16 tokens and "abcdefgh" 24.
    Merged, each group still gets the limit it has alone: greedy decoding runs them in
    one call and cuts each output at its own limit, beam search makes one call per limit.
    The untrained model never says <end>, so its outputs run to their limits."""
    if not trained:
        keras.utils.set_random_seed(3)
        fresh = build_model(system.config, len(system.source), len(system.target))
        system = Seq2Seq(system.config, system.source, system.target, fresh)
    groups = [["ab", "abcdefgh"], ["ab"], ["hh"]]
    for options, calls in ((DecodingOptions(max_length=40), 1), (DecodingOptions(max_length=40, beam=3), 2)):
        assert system.alone_limits(system.encode(groups[0]), options) == [24, 24]
        assert system.alone_limits(system.encode(groups[1]), options) == [16]
        decoded = system.decode(groups, options)
        assert decoded.calls == calls
        for group, outputs in zip(groups, decoded.outputs, strict=True):
            alone = [ids for (ids, _), *_ in system.generate(system.encode(group), options)]
            assert [o.target_tokens for o in outputs] == [
                [system.target.vocabulary.tokens[t] for t in ids] for ids in alone
            ]
            assert [o.text for o in outputs] == system.translate(group, options)
        if not trained:  # "ab" alone stopped at its limit, below the merged call's
            assert [len(o.target_tokens) for o in decoded.outputs[1]] == [16]


# ---------------------------------------------------------------------------- endpoints


def test_translate_one_text_and_a_list(model_dir, system):
    async def main():
        async with client_of(app_for(model_dir, system)) as client:
            one = await client.post("/v1/translate", json={"q": "abcd", "beam": 3, "n_best": 2})
            many = await client.post("/v1/translate", json={"q": ["abc", "hgf", ""], "return_tokens": True})
            heat = await client.post("/v1/translate", json={"q": "abcde", "return_attention": True})
            return one, many, heat

    one, many, heat = run(main())
    assert one.status_code == 200
    body = one.json()
    assert set(body["timing"]) == {"queue_ms", "decode_ms", "batch_size"}
    result = body["translations"]
    expected = system.n_best(["abcd"], DecodingOptions(beam=3, n_best=2))[0]
    assert result["text"] == expected[0][0]
    assert [h["text"] for h in result["n_best"]] == [t for t, _ in expected]
    assert result["score"] == pytest.approx(expected[0][1], rel=1e-5)
    assert "attention" not in result and "tokens" not in result
    results = many.json()["translations"]
    assert [r["text"] for r in results] == system.translate(["abc", "hgf", ""])
    assert results[0]["score"] is None  # greedy: no score (JSON has no NaN)
    assert results[0]["tokens"]["source"] == ["a", "b", "c"]
    assert results[0]["tokens"]["target"][-1] == "<end>"
    assert results[2]["tokens"] == {"source": [], "target": []}
    heatmap = heat.json()["translations"]
    rows, columns = len(heatmap["tokens"]["target"]), len(heatmap["tokens"]["source"])
    assert np.asarray(heatmap["attention"]).shape == (rows, columns) == (6, 5)
    np.testing.assert_allclose(np.asarray(heatmap["attention"]).sum(axis=1), 1, atol=1e-3)


def test_sampling_is_seeded_and_not_merged(model_dir, system):
    async def main():
        async with client_of(app_for(model_dir, system, batch_window_ms=100)) as client:
            body = {"q": ["abcd", "efgh"], "sample": {"temperature": 1.5, "top_k": 3, "seed": 7}}
            return await asyncio.gather(*(client.post("/v1/translate", json=body) for _ in range(3)))

    answers = run(main())
    options = DecodingOptions(sample=True, temperature=1.5, top_k=3, seed=7)
    for answer in answers:
        assert [r["text"] for r in answer.json()["translations"]] == system.translate(["abcd", "efgh"], options)
        assert answer.json()["timing"]["batch_size"] == 2  # alone: each draw depends on its batch and row


def test_errors_have_one_shape_and_never_200(model_dir, system):
    async def main():
        app = app_for(model_dir, system, max_texts=3, max_chars=10, max_beam=4, max_n_best=3, max_body_bytes=2000)
        async with client_of(app) as client:
            post = client.post
            json_headers = {"content-type": "application/json"}
            return [
                await post("/v1/translate", content=b'{"q": "ab"', headers=json_headers),
                await post("/v1/translate", content=b"[1, 2]", headers=json_headers),
                await post("/v1/translate", json={"q": "a" * 3000}),
                await post("/v1/translate", json={"q": ["a", "b", "c", "d"]}),
                await post("/v1/translate", json={"q": ["abc", "a" * 11]}),
                await post("/v1/translate", json={"q": "a" * 11}),
                await post("/v1/translate", json={"q": "ab", "beam": 5}),
                await post("/v1/translate", json={"q": "ab", "beam": 4, "n_best": 4}),
                await post("/v1/translate", json={"q": "ab", "beam": 2, "n_best": 3}),
                await post("/v1/translate", json={"q": "ab", "beam": 2, "sample": {}}),
                await post("/v1/translate", json={"q": "ab", "bogus": 1}),
                await post("/v1/translate", json={"q": 5}),
                await post("/v1/translate", json={"q": []}),
                await post("/v1/translate", json={"q": "ab", "sample": {"temperature": 0}}),
                await client.get("/nowhere"),
                await client.get("/v1/translate"),
            ]

    answers = run(main())
    assert_error(answers[0], 400, "malformed_json")
    assert_error(answers[1], 400, "malformed_json")
    assert_error(answers[2], 413, "body_too_large")
    assert_error(answers[3], 422, "invalid_field", "q")
    assert_error(answers[4], 422, "invalid_field", "q.1")
    assert_error(answers[5], 422, "invalid_field", "q")
    assert_error(answers[6], 422, "invalid_field", "beam")
    assert_error(answers[7], 422, "invalid_field", "n_best")
    assert_error(answers[8], 422, "invalid_field", "n_best")
    assert_error(answers[9], 422, "invalid_field", "sample")
    assert_error(answers[10], 422, "invalid_field", "bogus")
    assert answers[11].status_code == 422 and answers[11].json()["error"]["param"].startswith("q")
    assert_error(answers[12], 422, "invalid_field", "q")
    assert_error(answers[13], 422, "invalid_field", "sample.temperature")
    assert_error(answers[14], 404, "not_found")
    assert_error(answers[15], 405, "method_not_allowed")


def test_libretranslate_endpoints(model_dir, system):
    async def main():
        app = app_for(model_dir, system, source_lang="xx", target_lang="yy")
        async with client_of(app) as client:
            return [
                await client.post("/translate", json={"q": "abcd", "source": "xx", "target": "yy"}),
                await client.post(
                    "/translate", json={"q": ["abc", "hg"], "source": "auto", "target": "yy", "alternatives": 2}
                ),
                await client.post("/translate", json={"q": "abcd", "source": "xx", "target": "en"}),
                await client.get("/languages"),
            ]

    one, many, wrong, languages = run(main())
    assert one.json() == {"translatedText": system.translate(["abcd"])[0]}
    body = many.json()
    hypotheses = system.n_best(["abc", "hg"], DecodingOptions(beam=3, n_best=3))
    assert body["translatedText"] == [h[0][0] for h in hypotheses]
    assert body["alternatives"] == [[t for t, _ in h[1:]] for h in hypotheses]
    assert body["detectedLanguage"][0]["language"] == "xx"
    assert_error(wrong, 400, "unsupported_language", "target")
    assert languages.json() == [{"code": "xx", "name": "xx", "targets": ["yy"]}]


def test_info_health_metrics_docs_and_page(model_dir, system):
    (model_dir / "evaluation.json").write_text('{"bleu": 42.0}')

    async def main():
        async with client_of(app_for(model_dir, system)) as client:
            await client.post("/v1/translate", json={"q": ["abc", "de"]})
            await client.post("/v1/translate", json={"q": 1})
            return {
                path: await client.get(path)
                for path in (
                    "/v1/info",
                    "/healthz",
                    "/readyz",
                    "/metrics",
                    "/docs",
                    "/openapi.json",
                    "/",
                    "/static/app.js",
                )
            }

    try:
        answers = run(main())
    finally:
        (model_dir / "evaluation.json").unlink()
    info = answers["/v1/info"].json()
    assert info["vocabulary"] == {"source": len(system.source), "target": len(system.target)}
    assert info["test_scores"] == {"bleu": 42.0}
    assert info["settings"]["attention"] == "luong" and info["limits"]["max_chars"] == 1000
    assert info["backend"] == "jax" and info["device"].startswith("cpu") and info["version"]
    assert info["products"] == "float32"  # untied output layer: bfloat16 decoding is for tied embeddings
    assert answers["/healthz"].json() == {"status": "ok"}
    assert answers["/readyz"].status_code == 200
    metrics = answers["/metrics"].text
    assert 'seq2seq_requests_total{endpoint="/v1/translate",status="200"} 1.0' in metrics
    assert 'seq2seq_requests_total{endpoint="/v1/translate",status="422"} 1.0' in metrics
    assert "seq2seq_batch_sentences_count 1.0" in metrics
    assert re.search(r"seq2seq_batch_padding_share_sum [0-9.]+", metrics)
    assert "seq2seq_queue_texts 0.0" in metrics
    assert "/v1/translate" in answers["/openapi.json"].json()["paths"]
    page = answers["/"]
    assert page.status_code == 200 and 'id="source"' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "docs.js" in answers["/docs"].text and "http" not in answers["/docs"].text.replace("http-equiv", "")
    script = answers["/static/app.js"].text
    assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write|eval\(", script)
    assert "http://" not in script and "https://" not in script


def test_readyz_is_503_until_warmed_up(model_dir, system):
    """Ready only after warm-up, which then leaves the model's objects out of the
    garbage collector's full collections (gc.freeze: they stalled every request)."""
    frozen = gc.get_freeze_count()

    async def main():
        settings = dict(warmup=True, warmup_max_length=2, max_batch_sentences=8)
        async with client_of(app_for(model_dir, system, **settings)) as client:
            before = await client.get("/readyz")
            early = await client.post("/v1/translate", json={"q": "ab"})
            for _ in range(600):
                if (after := await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            return before, early, after, await client.post("/v1/translate", json={"q": "ab"})

    try:
        before, early, after, late = run(main())
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()  # the tests after this one in the process collect as before
    assert_error(before, 503, "not_ready")
    assert_error(early, 503, "not_ready")
    assert early.headers["retry-after"] == "1"
    assert after.status_code == 200 and after.json()["warmup_s"] > 0
    assert late.status_code == 200


def test_api_key_and_cors(model_dir, system):
    async def main():
        origin = {"Origin": "http://example.test"}
        async with client_of(app_for(model_dir, system, api_key="s3cret")) as client:
            keyed = [
                await client.post("/v1/translate", json={"q": "ab"}),
                await client.post("/v1/translate", json={"q": "ab"}, headers={"Authorization": "Bearer wrong"}),
                await client.post("/v1/translate", json={"q": "ab"}, headers={"Authorization": "Bearer s3cret"}),
                await client.post("/translate", json={"q": "ab", "target": "tgt", "api_key": "s3cret"}),
                await client.post("/translate", json={"q": "ab", "target": "tgt"}),
                await client.get("/v1/info"),
                await client.get("/healthz"),
                await client.get("/"),
            ]
        async with client_of(app_for(model_dir, system)) as client:
            closed = await client.post("/v1/translate", json={"q": "ab"}, headers=origin)
            preflight = await client.options(
                "/v1/translate", headers={**origin, "Access-Control-Request-Method": "POST"}
            )
        async with client_of(app_for(model_dir, system, cors_origins=["http://example.test"])) as client:
            opened = await client.post("/v1/translate", json={"q": "ab"}, headers=origin)
        return keyed, closed, preflight, opened

    keyed, closed, preflight, opened = run(main())
    assert_error(keyed[0], 401, "unauthorized")
    assert keyed[0].headers["www-authenticate"] == "Bearer"
    assert_error(keyed[1], 401, "unauthorized")
    assert [r.status_code for r in keyed[2:]] == [200, 200, 401, 401, 200, 200]
    assert closed.status_code == 200 and "access-control-allow-origin" not in closed.headers
    assert "access-control-allow-origin" not in preflight.headers and preflight.status_code != 200
    assert opened.headers["access-control-allow-origin"] == "http://example.test"


# ---------------------------------------------------------------------------- batching


def test_concurrent_clients_are_merged_into_few_calls_with_the_same_outputs(model_dir, system):
    texts = ["abcdef", "hg", "abc", "gfedc", "aabb", "cdcd", "efe", "bbbbb", "ha", "gegeg", "abab", "fedcba"]
    cap = 4
    app = app_for(model_dir, system, batch_window_ms=300, max_batch_sentences=cap)

    async def main():
        async with client_of(app) as client:
            answers = await asyncio.gather(*(client.post("/v1/translate", json={"q": t}) for t in texts))
            greedy_calls = app.state.batcher.calls
            beams = await asyncio.gather(
                *(client.post("/v1/translate", json={"q": [t, t[::-1]], "beam": 3, "n_best": 2}) for t in texts[:4])
            )
            return answers, greedy_calls, beams

    answers, greedy_calls, beams = run(main())
    # N clients, at most `cap` texts a call: at most ceil(N / cap) + 1 calls
    assert greedy_calls <= math.ceil(len(texts) / cap) + 1
    assert app.state.batcher.calls - greedy_calls <= math.ceil(8 / cap) + 1  # 4 clients of 2 texts
    assert max(a.json()["timing"]["batch_size"] for a in answers) == cap
    assert [a.json()["translations"]["text"] for a in answers] == [system.translate([t])[0] for t in texts]
    options = DecodingOptions(beam=3, n_best=2)
    for text, answer in zip(texts[:4], beams, strict=True):
        alone = system.n_best([text, text[::-1]], options)
        got = answer.json()["translations"]
        assert [[h["text"] for h in r["n_best"]] for r in got] == [[t for t, _ in h] for h in alone]
        np.testing.assert_allclose([r["score"] for r in got], [h[0][1] for h in alone], rtol=1e-4)


def test_full_queue_429_and_deadline_504(model_dir, system):
    release = threading.Event()

    async def main():
        app = app_for(model_dir, system, max_queue=3, timeout_s=3.0, batch_window_ms=0)
        async with client_of(app) as client:
            blocker = asyncio.ensure_future(app.state.batcher.run_in_worker(release.wait, 10))
            first = asyncio.ensure_future(client.post("/v1/translate", json={"q": ["ab", "cd"]}))
            await asyncio.sleep(0.3)  # taken from the queue, waiting for the worker
            second = asyncio.ensure_future(client.post("/v1/translate", json={"q": ["ef", "gh"]}))
            await asyncio.sleep(0.3)
            full = await client.post("/v1/translate", json={"q": ["ab", "ba"]})
            release.set()
            await blocker
            return full, await first, await second

    full, first, second = run(main())
    assert_error(full, 429, "queue_full")
    assert int(full.headers["retry-after"]) >= 1
    assert first.status_code == second.status_code == 200

    async def late():
        app = app_for(model_dir, system, timeout_s=0.3)
        async with client_of(app) as client:
            blocker = asyncio.ensure_future(app.state.batcher.run_in_worker(time.sleep, 1.0))
            answer = await client.post("/v1/translate", json={"q": "abc"})
            await blocker
            return answer, app.state.metrics

    answer, metrics = run(late())
    assert_error(answer, 504, "deadline_exceeded")
    assert metrics.rejections.labels("deadline")._value.get() == 1


class FakeDecoded:
    def __init__(self, groups):
        self.outputs = [[text.upper() for text in group] for group in groups]
        self.calls, self.padding_share = 1, 0.0


def fake_batcher(calls: list, delay: float = 0.0, **kwargs) -> Batcher:
    def decode(groups, key, attention):
        time.sleep(delay)
        calls.append(groups)
        return FakeDecoded(groups)

    return Batcher(decode, **kwargs)


def test_batcher_drops_disconnected_clients_and_finishes_the_queue_at_shutdown():
    calls: list = []

    def gone() -> bool:
        return True

    def here() -> bool:
        return False

    async def main():
        batcher = fake_batcher(calls, delay=0.2, window_s=0.05, max_sentences=2)
        batcher.start()
        jobs = [
            asyncio.ensure_future(batcher.submit([f"t{i}"], "key", 1, 10.0, gone=gone if i == 1 else here))
            for i in range(6)
        ]
        await asyncio.sleep(0.01)
        await batcher.close()  # as on SIGTERM: every queued request is still answered
        results = await asyncio.gather(*jobs, return_exceptions=True)
        with pytest.raises(NotRunning):
            await batcher.submit(["late"], "key", 1, 1.0)
        return results

    results = run(main())
    assert isinstance(results[1], asyncio.CancelledError)
    assert [r.outputs for i, r in enumerate(results) if i != 1] == [["T0"], ["T2"], ["T3"], ["T4"], ["T5"]]
    decoded = [text for groups in calls for group in groups for text in group]
    assert "t1" not in decoded and sorted(decoded) == ["t0", "t2", "t3", "t4", "t5"]
    assert all(sum(len(g) for g in groups) <= 2 for groups in calls)


def test_batcher_keys_caps_window_zero_and_queue_bound():
    calls: list = []

    async def main():
        batcher = fake_batcher(calls, window_s=0.1, max_sentences=8, max_tokens=5, max_queue=6)
        batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit([f"a{i}"], "a", 2, 10.0)) for i in range(4)]
        jobs.append(asyncio.ensure_future(batcher.submit(["b"], "b", 1, 10.0)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(["x", "y"], "a", 2, 10.0)
        await asyncio.gather(*jobs)
        await batcher.close()
        alone: list = []
        off = fake_batcher(alone, window_s=0)
        off.start()
        await asyncio.gather(*(off.submit([f"c{i}"], "c", 1, 10.0) for i in range(3)))
        await off.close()
        expired = fake_batcher([], delay=0.3, window_s=0)
        expired.start()
        first = asyncio.ensure_future(expired.submit(["slow"], "d", 1, 10.0))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            await expired.submit(["late"], "d", 1, 0.1)
        await first
        await expired.close()
        return alone

    alone = run(main())
    # tokens cap 5 at 2 tokens a request: pairs of requests; the other key apart
    assert calls == [[["a0"], ["a1"]], [["a2"], ["a3"]], [["b"]]]
    assert alone == [[["c0"]], [["c1"]], [["c2"]]]  # window 0: no merging


def test_batcher_leaves_a_spill_past_a_full_row_bucket_for_the_next_call():
    """17 one-text requests fill a 16-row call and leave one for the next (not a 32-row
    call for 17); requests that would leave the bucket part empty stay together, and so
    do 17 whose padded bucket (20) is not twice the full one. A client that has gone is
    dropped before the bucket is filled."""

    async def decoded_groups(sizes: list[int], gone_at: int = -1, buckets=(8, 16, 32, 64)) -> list:
        calls: list = []
        batcher = fake_batcher(calls, window_s=0.05, max_sentences=64, row_buckets=buckets)
        batcher.start()
        texts = [[f"t{i}.{j}" for j in range(size)] for i, size in enumerate(sizes)]
        submitted = [
            batcher.submit(group, "key", 1, 10.0, gone=lambda i=i: i == gone_at) for i, group in enumerate(texts)
        ]
        results = await asyncio.gather(*submitted, return_exceptions=True)
        await batcher.close()
        for i, (group, result) in enumerate(zip(texts, results, strict=True)):
            if i == gone_at:
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result.outputs == [text.upper() for text in group]
        assert batcher.queued == 0
        return [sum(len(group) for group in groups) for groups in calls], [g for groups in calls for g in groups]

    sizes, groups = run(decoded_groups([1] * 17))
    assert sizes == [16, 1] and groups == [[f"t{i}.0"] for i in range(17)]  # in order
    assert run(decoded_groups([10, 10]))[0] == [20]
    assert run(decoded_groups([8, 1]))[0] == [8, 1]
    assert run(decoded_groups([5]))[0] == [5]
    assert run(decoded_groups([1] * 17, buckets=(8, 16, 20)))[0] == [17]  # padded to 20: one call
    # a client that has gone is dropped before the bucket is filled: 16 live texts decode
    sizes, groups = run(decoded_groups([1] * 18, gone_at=3))
    assert sizes == [16, 1] and ["t3.0"] not in groups


def test_client_gone_answers_without_waiting():
    """One step of `receive`: a disconnect given at once is gone, a receive that would
    wait is a client still there, a receive that fails has no client."""

    async def main():
        async def left() -> dict:
            return {"type": "http.disconnect"}

        async def waits() -> dict:
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def fails() -> dict:
            raise OSError("connection reset")

        async def more_body() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        replayed = _replay(b"{}", waits)  # as the server wraps uvicorn's receive
        assert (await replayed())["body"] == b"{}"  # the app reads the body first
        started = time.perf_counter()
        answers = [client_gone(receive)() for receive in (left, waits, fails, more_body, replayed)]
        return answers, time.perf_counter() - started

    answers, seconds = run(main())
    assert answers == [True, False, True, False, False] and seconds < 1


def test_serve_options_match_the_settings():
    fields = {f.name: f.default for f in dataclasses.fields(ServerSettings)}
    for name, (_kind, text) in SERVE_OPTIONS.items():
        default = fields[name]
        assert f"(default: {default if default is not None else 'none'}" in text, name
    args = build_parser().parse_args(
        ["serve", "--model-dir", "m", "--port", "9", "--cors-origin", "http://a", "--api-key", "k", "--no-warmup"]
    )
    assert (args.port, args.cors_origins, args.api_key, args.warmup) == (9, ["http://a"], "k", False)
    # settings whose flags cli.py has yet to take (issue 23); `seq2seq serve` gives them their defaults
    awaiting = {"body_timeout_s"}
    assert set(fields) - awaiting == {*SERVE_OPTIONS, "cors_origins", "warmup"} - awaiting
    for wrong in ({"max_queue": 0}, {"body_timeout_s": 0}):
        with pytest.raises(ValueError):
            ServerSettings(**wrong)


# ---------------------------------------------------------------------------- bench/serve.py


def test_the_serve_benchs_bare_decoder_row_and_its_report(model_dir):
    """bench/serve.py's bare decoder decodes whole batches of the asked size, timed and
    bounded; bench/report.py renders the serving table with its share of that row."""
    serve = bench_module("serve")
    sentences = ["ab", "abc", "hgfa", "ggg", "abcdefgh", "dd"]
    bare = serve.bare_decoder(model_dir, sentences, 3, 0.2, 30)
    assert 0 < bare["sentences"] <= 30 and bare["sentences"] % 3 == 0
    assert bare["sentences_per_s"] > 0 and bare["mean_batch"] == 3.0 and bare["p50_ms"] > 0
    rows = {"batching on": {**bare, "sentences_per_s": bare["sentences_per_s"] / 2, "server_cpu_ms_per_request": 1.5}}
    rows["bare decoder"] = bare
    result = {"cpu": "a CPU, 2 cores", "clients": 32, "seconds": 0.2, "window_ms": 5.0, "rows": rows}
    result["memory"] = {"rss_after_warmup_mib": 1000.0, "rss_after_run_mib": 1010.0}
    result["checks"] = {"speedup_vs_one_at_a_time": 4.0, "share_of_bare_decoder": 0.5}
    text = "\n".join(bench_module("report").serve_section(result))
    assert "| batching on |" in text and "| 1.50 |" in text and "| bare decoder |" in text
    assert "4.0× one at a time, 50% of the bare decoder at the same batch size" in text
