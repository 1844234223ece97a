"""Hypothesis-made malformed bodies of every content type, sent to the endpoint app in process
(``AppClient``, tests/conftest.py): each gets a 400 or 415 in the one error shape, and the next
good request is answered right; and seeded mutation fuzzing of every request type."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openknn.formats import csv as csv_format
from openknn.formats import json as json_format
from openknn.formats import recordio
from openknn.jobs import artifact

from ..conftest import AppClient, Csr, app_client, captured
from ..integration.test_serving_http import QUERIES, make_model

D = 6
GOOD = csv_format.encode_csv(QUERIES)
EXPECTED = make_model().predict(QUERIES)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppClient]:
    """The app in process, serving the model as `openknn serve` would: from its archive."""
    path = tmp_path_factory.mktemp("fuzz") / "model.tar.gz"
    artifact.write_model_tar(make_model(), path)
    with app_client(artifact.load(path)) as endpoint:
        yield endpoint


rows = st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=D, max_size=D),
                min_size=1, max_size=5)
bad_value = st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "abc", "", "0x10", "1,2",
                             "true", "null", "\u00e9"])


@st.composite
def bad_csv(draw: st.DrawFn) -> tuple[str, bytes]:
    data = draw(rows)
    i, j = draw(st.integers(0, len(data) - 1)), draw(st.integers(0, D - 1))
    kind = draw(st.sampled_from(["value", "count", "charset", "empty"]))
    lines = [",".join(repr(v) for v in r) for r in data]
    if kind == "empty":
        return "text/csv", draw(st.sampled_from([b"", b"\n", b"\n\n \n"]))
    if kind == "charset":
        return "text/csv; charset=utf-8", "\n".join(lines).encode() + b"\n\xff\xfe,1"
    if kind == "count":
        n = draw(st.sampled_from([1, D - 1, D + 1, 2 * D]))
        lines[i] = ",".join(["1.0"] * n)
    else:
        fields = lines[i].split(",")
        fields[j] = draw(bad_value)
        lines[i] = ",".join(fields)
    return "text/csv", "\n".join(lines).encode()


def _instance(row: list[object], form: int) -> dict[str, object]:
    return {"features": row} if form == 0 else {"data": {"features": {"values": row}}}


@st.composite
def bad_json(draw: st.DrawFn) -> tuple[str, bytes]:
    data: list[list[object]] = [list(r) for r in draw(rows)]
    i = draw(st.integers(0, len(data) - 1))
    kind = draw(st.sampled_from(["value", "count", "truncate", "shape", "lines"]))
    if kind == "value":
        data[i][draw(st.integers(0, D - 1))] = draw(st.sampled_from(
            ["1.0", None, True, [1.0], {"a": 1}]))
    elif kind == "count":
        data[i] = data[i][: draw(st.sampled_from([0, 1, D - 1]))] or [1.0] * (D + 1)
    form = draw(st.integers(0, 1))
    body = orjson.dumps({"instances": [_instance(r, form) for r in data]})
    if kind == "shape":
        body = draw(st.sampled_from([b"[]", b"{}", b'{"instances": {}}', b'{"instances": []}',
                                     b'{"instance": [{"features": [1]}]}', b"null", b"1e999"]))
    if kind == "truncate":
        body = body[: draw(st.integers(1, len(body) - 1))]
    if kind == "lines":
        lines = [orjson.dumps(_instance(r, form)) for r in data]
        lines[i] = lines[i][: draw(st.integers(1, len(lines[i]) - 1))]
        return "application/jsonlines", b"\n".join(lines)
    return "application/json", body


@st.composite
def bad_recordio(draw: st.DrawFn) -> tuple[str, bytes]:
    x = np.array(draw(rows), np.float32)
    body = bytearray(recordio.dense_to_bytes(x))
    kind = draw(st.sampled_from(["truncate", "magic", "count", "nan", "garbage"]))
    if kind == "truncate":
        cut = draw(st.integers(1, len(body) - 1).filter(lambda c: c % (len(body) // len(x))))
        body = body[:cut]
    elif kind == "magic":
        body[0:4] = draw(st.binary(min_size=4, max_size=4).filter(
            lambda b: b != b"\x0a\x23\xd7\xce"))
    elif kind == "count":
        body = bytearray(recordio.dense_to_bytes(np.ones((2, D + 1), np.float32)))
    elif kind == "nan":
        x[0, 0] = np.nan
        body = bytearray(recordio.dense_to_bytes(x))
    else:
        body = bytearray(b"\x0a\x23\xd7\xce" + draw(st.binary(min_size=4, max_size=40)))
    return "application/x-recordio-protobuf", bytes(body)


unsupported = st.tuples(st.sampled_from(["application/xml", "image/png", "text/plain",
                                         "application/octet-stream"]),
                        st.binary(max_size=50))

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(client: httpx.Client, content_type: str, body: bytes, allowed: tuple[int, ...],
          ) -> None:
    r = client.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert r.status_code in allowed, (content_type, body[:200], r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == r.status_code and error["message"]
    ok = client.post("/invocations", content=GOOD, headers={"Content-Type": "text/csv"})
    assert ok.status_code == 200
    np.testing.assert_array_equal(
        json_format.parse_predictions_json(ok.content)["predicted_label"], EXPECTED)


@FUZZ
@given(case=st.one_of(bad_csv(), bad_json(), bad_recordio()))
def test_malformed_bodies_get_400(client: AppClient, case: tuple[str, bytes]) -> None:
    check(client, *case, allowed=(400,))


@FUZZ
@given(case=unsupported)
def test_unsupported_types_get_415(client: AppClient, case: tuple[str, bytes]) -> None:
    check(client, *case, allowed=(415,))


@FUZZ
@given(content_type=st.sampled_from(["text/csv", "application/json", "application/jsonlines",
                                     "application/x-recordio-protobuf"]),
       body=st.binary(min_size=1, max_size=300))
def test_random_bytes_never_break_the_server(client: AppClient, content_type: str,
                                             body: bytes) -> None:
    r = client.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert r.status_code in (200, 400), r.text
    check(client, "text/csv", b"1,2", allowed=(400,))



# ---------------------------------------------------------------- issue 10: the grown fuzz
# Seeded mutation fuzzing of every request type through the app in process (no socket, so
# tens of thousands of bodies take a minute): valid bodies of each type, their bytes changed,
# cut, spliced and salted with tokens that broke parsers before, under Content-Type and Accept
# parameters good and bad. Every answer must be below 500 in the one error shape, the log
# must hold no traceback and no error, the server must keep answering right, and its memory
# must stay bounded.

TOKENS = [b"nan", b"inf", b"-inf", b"1e400", b"1e-400", b"\xff", b"\xfe\xff", b"\xed\xa0\x80",
          b'"\\ud800"', b"\\udcff", b"\x00", b",", b",,", b"\n", b"\r\n", b"\r", b'"', b"[",
          b"]", b"{", b"}", b":", b"true", b"null", b"-", b"e", b"9" * 400, b"0x10", b"\t",
          b"\x0a\x23\xd7\xce", b"\xff" * 10, b"\x80" * 11, b"\x0a\x06values", b"\x12\x00",
          b'{"features": ', b'"instances"', b'"keys": [9999999999]', b'"shape": [0]']
CHARSETS = ["utf-8", "UTF-8", "latin-1", "ascii", "utf-16", "utf-16-be", "utf-32", "cp1252",
            "hex", "rot13", "base64", "utf-7", "unicode_escape", "punycode", "idna", "zlib",
            "nope", "", '"utf-8"', "utf-8; charset=ascii"]
LABEL_SIZES = ["0", "1", "2", "64", "65", "1000000", "²", "١", "", "-1", "1e3", "9" * 900]
KNOBS = ["nprobe=1", "nprobe=8", "nprobe=9", "nprobe=0", "nprobe=²", "nprobe=" + "9" * 900,
         "ef_search=5", "efsearch=x", "nprobe=2; nprobe=3"]
ACCEPTS = [None, "*/*", "application/json", "application/json; verbose=true",
           "application/jsonlines; verbose=1", "application/x-recordio-protobuf; verbose=yes",
           "text/csv", "text/csv; verbose=true", "application/json; verbose=maybe",
           "image/png", "image/png, text/csv", "", "application/*; verbose=false",
           ", ".join(["text/html"] * 500), "application/json; verbose=true; verbose=false"]
TYPES = ["text/csv", "application/json", "application/jsonlines",
         "application/x-recordio-protobuf"]


def _valid_body(rng: np.random.Generator, media: str) -> bytes:
    x = (rng.standard_normal((int(rng.integers(1, 12)), D)) * 10.0 ** rng.integers(-3, 6))
    if media == "text/csv":
        return csv_format.encode_csv(x.astype(np.float32))
    if media == "application/json":
        if rng.random() < 0.3:
            inst = [{"data": {"features": {"keys": [int(k)], "shape": [D], "values": [1.5]}}}
                    for k in rng.integers(0, D, len(x))]
        else:
            inst = [{"features": r} for r in x.tolist()]
        return orjson.dumps({"instances": inst})
    if media == "application/jsonlines":
        return b"\n".join(orjson.dumps({"features": r}) for r in x.tolist())
    kind = rng.integers(0, 4)
    labels = rng.integers(0, 5, len(x)) if rng.random() < 0.5 else None
    if kind == 3:
        x[rng.random(x.shape) < 0.7] = 0
        buf = io.BytesIO()
        recordio.write_sparse(buf, Csr(x.astype(np.float32)), labels)
        return buf.getvalue()
    dtype = (np.float32, np.float64, np.int64)[kind]
    return recordio.dense_to_bytes(np.clip(x, -1e9, 1e9).astype(dtype), labels)




def _mutate(rng: np.random.Generator, body: bytes, other: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(int(rng.integers(0, 4))):
        what = rng.integers(0, 6)
        at = int(rng.integers(0, len(data) + 1))
        if what == 0 and data:  # change a byte
            data[min(at, len(data) - 1)] = int(rng.integers(0, 256))
        elif what == 1:  # insert a token
            data[at:at] = TOKENS[int(rng.integers(0, len(TOKENS)))]
        elif what == 2:  # delete a range
            del data[at:at + int(rng.integers(1, 16))]
        elif what == 3:  # cut
            del data[at:]
        elif what == 4:  # splice in another valid body
            data[at:at] = other[:int(rng.integers(0, len(other) + 1))]
        else:  # repeat a piece
            data[at:at] = data[max(0, at - 24):at] * int(rng.integers(1, 4))
    return bytes(data)


def _headers(rng: np.random.Generator, media: str) -> dict[str, bytes]:
    """Plain headers for most bodies (so that the bodies are what is fuzzed), else random
    parameters, good and bad."""
    if rng.random() < 0.6:
        return {"Content-Type": media.encode(), "Accept": b"application/json; verbose=true"}
    params = []
    if rng.random() < 0.35:
        params.append("charset=" + CHARSETS[int(rng.integers(0, len(CHARSETS)))])
    if rng.random() < 0.25:
        params.append("label_size=" + LABEL_SIZES[int(rng.integers(0, len(LABEL_SIZES)))])
    if rng.random() < 0.1:
        params.append(KNOBS[int(rng.integers(0, len(KNOBS)))])
    encoding = "latin-1" if rng.random() < 0.5 else "utf-8"  # '²' as one byte or as two
    headers = {"Content-Type": "; ".join([media, *params]).encode(encoding, "replace")}
    accept = ACCEPTS[int(rng.integers(0, len(ACCEPTS)))]
    if accept is not None:
        headers["Accept"] = accept.encode()
    return headers


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fuzz(per_type: int, seed: int = 10) -> dict[str, Any]:
    """``per_type`` mutated bodies of each request type through the app; the figures."""
    rng = np.random.default_rng(seed)
    statuses: dict[str, dict[int, int]] = {media: {} for media in TYPES}
    bad: list[tuple[str, bytes, int, str]] = []

    async def main(client: httpx.AsyncClient) -> dict[str, Any]:
        async def one(media: str) -> None:
            body = _mutate(rng, _valid_body(rng, media), _valid_body(rng, media))
            headers = _headers(rng, media)
            r = await client.post("/invocations", content=body, headers=headers)
            count = statuses[media]
            count[r.status_code] = count.get(r.status_code, 0) + 1
            if r.status_code >= 500 or (r.status_code != 200 and (
                    r.json()["error"]["code"] != r.status_code
                    or not r.json()["error"]["message"])):
                bad.append((str(headers), body[:200], r.status_code, r.text[:300]))

        async def good() -> None:
            r = await client.post("/invocations", content=GOOD,
                                  headers={"Content-Type": "text/csv"})
            assert r.status_code == 200
            np.testing.assert_array_equal(json_format.parse_predictions_json(
                r.content)["predicted_label"], EXPECTED)

        total = per_type * len(TYPES)
        warm = min(2000, total // 10)
        rss = [0, 0]
        start = time.perf_counter()
        for i in range(0, total, 4):  # four at a time: the batcher merges some of them
            await asyncio.gather(*(one(TYPES[(i + j) % 4]) for j in range(4)))
            if i % 400 == 0:
                await good()
            if i == warm - warm % 4:
                gc.collect()
                rss[0] = _rss_bytes()
        gc.collect()
        rss[1] = _rss_bytes()
        await good()
        return {"seconds": time.perf_counter() - start, "rss_warm": rss[0],
                "rss_end": rss[1], "statuses": statuses, "bad": bad,
                "tracebacks": logs.tracebacks, "errors": len(logs.errors),
                "metrics": (await client.get("/metrics")).text}

    # an app of its own: its metrics and its log hold these requests only
    with captured() as logs, app_client(make_model("faiss.IVFFlat")) as endpoint:
        return endpoint.run(main, timeout_s=60 + per_type / 25)


def _report(figures: dict[str, Any]) -> str:
    counts = {m: dict(sorted(c.items())) for m, c in figures["statuses"].items()}
    growth = (figures["rss_end"] - figures["rss_warm"]) / 2**20
    return (f"fuzz: {counts}; {figures['seconds']:.1f} s; RSS after warm-up "
            f"{figures['rss_warm'] / 2**20:.1f} MiB, at the end {figures['rss_end'] / 2**20:.1f}"
            f" MiB (growth {growth:+.1f} MiB); tracebacks {figures['tracebacks']}, "
            f"error lines {figures['errors']}")


def _check(figures: dict[str, Any], per_type: int, max_growth_mib: float) -> None:
    print(_report(figures))
    assert not figures["bad"], figures["bad"][:5]
    for media, counts in figures["statuses"].items():
        assert sum(counts.values()) == per_type, (media, counts)
        assert all(status < 500 for status in counts), (media, counts)
        assert sum(n for s, n in counts.items() if s != 200) > per_type // 4  # it did fuzz
    assert figures["tracebacks"] == 0 and figures["errors"] == 0
    assert 'status="5' not in figures["metrics"]
    assert figures["rss_end"] - figures["rss_warm"] < max_growth_mib * 2**20, _report(figures)


def test_mutated_bodies_of_every_type_never_get_500() -> None:
    _check(fuzz(300), 300, max_growth_mib=64)


@pytest.mark.slow
def test_20000_mutated_bodies_of_every_type_never_get_500() -> None:
    """The issue's figure: 484 of 20,000 fuzzed CSV bodies were 500s before."""
    _check(fuzz(20_000, seed=2026), 20_000, max_growth_mib=64)
