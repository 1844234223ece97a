"""Batch transform and in-process invoke: the same answers as the endpoint's core, every
split type and batch strategy, no half-written output, clear errors. The commands run in this
process (click's CliRunner, ``cli_helpers``); test_invoke_warnings runs invoke as a process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from openknn.errors import ClientError, DataError
from openknn.formats import json as json_format
from openknn.formats import recordio
from openknn.jobs import artifact
from openknn.serving import transform

from .cli_helpers import openknn
from .test_serving_http import QUERIES, make_model

ROWS = np.random.default_rng(3).standard_normal((500, 6)).astype(np.float32)


def jsonl(x: np.ndarray) -> bytes:
    return b"".join(orjson.dumps({"features": r.tolist()}) + b"\n" for r in x)


def predictions_of(path: Path) -> np.ndarray:
    return json_format.parse_predictions_jsonlines(path.read_bytes())["predicted_label"]


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.tar.gz"
    artifact.write_model_tar(make_model(), path)
    return path


@pytest.mark.parametrize("strategy", ["MultiRecord", "SingleRecord"])
def test_jsonlines_files_give_endpoint_answers(tmp_path: Path, strategy: str) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl(ROWS[:300]))
    (tmp_path / "in" / "sub" / "b.jsonl").write_bytes(jsonl(ROWS[300:]))
    spec = transform.TransformSpec(batch_strategy=strategy, max_payload_mb=0.01)
    out = transform.run(make_model(), str(tmp_path / "in"), tmp_path / "out", spec)
    assert [p.name for p in out] == ["a.jsonl.out", "b.jsonl.out"]
    got = np.concatenate([predictions_of(p) for p in out])
    np.testing.assert_array_equal(got, make_model().predict(ROWS))


def test_recordio_split_and_json_accept(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.pbr").write_bytes(recordio.dense_to_bytes(ROWS))
    spec = transform.TransformSpec(content_type="application/x-recordio-protobuf",
                                   accept="application/json", split_type="RecordIO",
                                   max_payload_mb=0.005)
    [out] = transform.run(make_model(), str(tmp_path / "in"), tmp_path / "out", spec)
    lines = out.read_bytes().splitlines()
    assert len(lines) > 1  # several MultiRecord requests, one JSON document per line
    got = np.concatenate([json_format.parse_predictions_json(line)["predicted_label"]
                          for line in lines])
    np.testing.assert_array_equal(got, make_model().predict(ROWS))


def test_split_none_sends_whole_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "q.csv").write_bytes(b"\n".join(
        b",".join(repr(float(v)).encode() for v in r) for r in QUERIES))
    spec = transform.TransformSpec(content_type="text/csv", accept="text/csv",
                                   split_type="None", assemble_with="None")
    [out] = transform.run(make_model(), str(tmp_path / "in"), tmp_path / "out", spec)
    got = np.array(out.read_text().split(), dtype=np.float32)
    np.testing.assert_array_equal(got, make_model().predict(QUERIES))


def test_bad_record_names_file_and_records_and_leaves_no_output(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    body = jsonl(ROWS[:50]) + b'{"features": [1, 2]}\n'
    (tmp_path / "in" / "bad.jsonl").write_bytes(body)
    spec = transform.TransformSpec(batch_strategy="SingleRecord")
    with pytest.raises(DataError, match=r"bad.jsonl, records 51-51: .*2 features"):
        transform.run(make_model(), str(tmp_path / "in"), tmp_path / "out", spec)
    assert list((tmp_path / "out").iterdir()) == []


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match=r"SplitType Line cannot split RecordIO-protobuf"):
        transform.TransformSpec(content_type="application/x-recordio-protobuf").check()
    with pytest.raises(ClientError, match=r"BatchStrategy 'Some' is not one of"):
        transform.TransformSpec(batch_strategy="Some").check()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClientError, match=r"has no files"):
        transform.run(make_model(), str(tmp_path / "empty"), tmp_path / "out",
                      transform.TransformSpec())


def test_cli_transform_and_invoke(tmp_path: Path, model_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl(ROWS))
    r = openknn("transform", str(model_path), "--input", str(tmp_path / "in"),
                "--output", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(predictions_of(tmp_path / "out" / "a.jsonl.out"),
                                  make_model().predict(ROWS))
    r = openknn("invoke", str(model_path), "--content-type", "application/jsonlines",
                "--accept", "application/jsonlines; verbose=true", input=jsonl(QUERIES))
    assert r.returncode == 0, r.stderr
    got = json_format.parse_predictions_jsonlines(r.stdout_bytes)
    distances, labels = make_model().neighbors(QUERIES)
    np.testing.assert_array_equal(got["predicted_label"], make_model().predict(QUERIES))
    np.testing.assert_array_equal(got["labels"], labels)
    r = openknn("invoke", str(model_path), input="1,2,3")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("ClientError: HTTP 400:")
