"""Hypothesis-made malformed bodies of every content type, sent to a real server process:
each gets a 400 or 415 in the one error shape, and the next good request is answered right."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openknn import artifact
from openknn.formats import csv as csv_format
from openknn.formats import json as json_format
from openknn.formats import recordio

from ..integration.test_serving_http import QUERIES, make_model, start_server, stop

D = 6
GOOD = csv_format.encode_csv(QUERIES)
EXPECTED = make_model().predict(QUERIES)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    path = tmp_path_factory.mktemp("fuzz") / "model.tar.gz"
    artifact.write_model_tar(make_model(), path)
    proc, url = start_server([str(path)])
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client
    stop(proc)


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

FUZZ = settings(max_examples=60, deadline=None,
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
def test_malformed_bodies_get_400(server: httpx.Client, case: tuple[str, bytes]) -> None:
    check(server, *case, allowed=(400,))


@FUZZ
@given(case=unsupported)
def test_unsupported_types_get_415(server: httpx.Client, case: tuple[str, bytes]) -> None:
    check(server, *case, allowed=(415,))


@FUZZ
@given(content_type=st.sampled_from(["text/csv", "application/json", "application/jsonlines",
                                     "application/x-recordio-protobuf"]),
       body=st.binary(min_size=1, max_size=300))
def test_random_bytes_never_break_the_server(server: httpx.Client, content_type: str,
                                             body: bytes) -> None:
    r = server.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert r.status_code in (200, 400), r.text
    check(server, "text/csv", b"1,2", allowed=(400,))

