"""The transform worker's pure parts: output names as SageMaker gives them (the key relative
to the input prefix, or to a manifest's prefix, plus ``.out``), and the batch settings a job
leaves out taken from the container's settings, as ``/execution-parameters`` gives them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openknn.errors import ClientError
from openknn.jobs.storage import DataFile
from openknn.service import transform_worker

PREFIX = "s3://bucket/batch/in/"


def files(*keys: str) -> list[DataFile]:
    return [DataFile(f"s3://bucket/{key}", 1) for key in keys]


@pytest.mark.parametrize("location", [PREFIX, PREFIX.rstrip("/")])
def test_outputs_keep_the_keys_below_the_prefix(location: str) -> None:
    assert transform_worker.output_names(
        files("batch/in/a.csv", "batch/in/sub/b.csv"), location, "S3Prefix") == [
        "a.csv.out", "sub/b.csv.out"]


def test_an_s3uri_naming_one_object_gives_its_base_name() -> None:
    assert transform_worker.output_names(files("batch/in/a.csv"), PREFIX + "a.csv",
                                         "S3Prefix") == ["a.csv.out"]


def test_a_manifests_outputs_are_its_keys(tmp_path: Path) -> None:
    manifest = tmp_path / "m.manifest"
    manifest.write_text(json.dumps([{"prefix": PREFIX}, "sub/b.csv", "a.csv"]))
    assert transform_worker.output_names(files("batch/in/sub/b.csv", "batch/in/a.csv"),
                                         str(manifest), "ManifestFile") == [
        "sub/b.csv.out", "a.csv.out"]


def test_two_objects_on_one_output_name_fail() -> None:
    with pytest.raises(ClientError, match=r"would be written to one output name"):
        transform_worker.output_names(files("x/a.csv", "y/a.csv"), PREFIX, "S3Prefix")


def job(**changes: Any) -> dict[str, Any]:
    return {"input": {"content_type": "text/csv", "split_type": "None"},
            "output": {"accept": None, "assemble_with": "None"},
            "batch_strategy": None, "max_payload_mb": None, **changes}


def test_left_out_batch_settings_are_the_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEMAKER_BATCH_STRATEGY", raising=False)
    monkeypatch.delenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", raising=False)
    spec = transform_worker.spec_of(job())
    assert (spec.batch_strategy, spec.max_payload_mb, spec.accept) == ("MultiRecord", 6.0, "")
    monkeypatch.setenv("SAGEMAKER_BATCH_STRATEGY", "SINGLE_RECORD")
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "2")
    spec = transform_worker.spec_of(job())
    assert (spec.batch_strategy, spec.max_payload_mb) == ("SingleRecord", 2.0)
    spec = transform_worker.spec_of(job(batch_strategy="MultiRecord", max_payload_mb=9))
    assert (spec.batch_strategy, spec.max_payload_mb) == ("MultiRecord", 9.0)
