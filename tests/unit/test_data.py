"""Channels: content-type resolution (decision 15), mini-batches, per-record checks, storage."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from openknn.errors import ChannelError, DataError, UnsupportedMediaType
from openknn.formats import recordio
from openknn.formats.media import CSV, RECORDIO, parse_media_type
from openknn.jobs.data import Block, Channel, check_block, iter_blocks, resolve_content_type
from openknn.jobs.progress import Progress
from openknn.jobs.storage import DataFile, list_channel

from ..conftest import write_csv


def files(*names: str) -> list[DataFile]:
    return [DataFile(f"/d/{n}", 1) for n in names]


def test_absent_content_type_is_recordio_unless_every_file_is_csv() -> None:
    assert resolve_content_type(None, files("a.csv", "b.csv.gz"))[0] == CSV
    assert resolve_content_type(None, files("a.csv", "b.pbr"))[0] == RECORDIO
    assert resolve_content_type(None, files("matrix_0.pbr"))[0] == RECORDIO
    assert resolve_content_type("text/csv; label_size=1", files("x"))[0] == CSV


def test_bad_content_types() -> None:
    with pytest.raises(UnsupportedMediaType, match=r"'application/x-parquet' is not supported "
                       r"for training; use 'text/csv' or 'application/x-recordio-protobuf'"):
        resolve_content_type("application/x-parquet", files("a"))
    with pytest.raises(DataError, match=r"training needs label_size=1.*got label_size=2"):
        resolve_content_type("text/csv;label_size=2", files("a"))


def test_media_type_parsing() -> None:
    assert parse_media_type("Application/JSON; Verbose=True") == ("application/json",
                                                                 {"verbose": "True"})
    assert parse_media_type("application/x-recordio")[0] == RECORDIO


def test_blocks_are_mini_batches_across_files(tmp_path: Path) -> None:
    x = np.arange(70 * 3, dtype=np.float64).reshape(70, 3)
    write_csv(tmp_path / "a.csv", x[:40], np.zeros(40))
    with open(tmp_path / "b.pbr", "wb") as f:
        recordio.write_dense(f, x[40:], np.ones(30))
    (tmp_path / ".amazon.manifest").write_text("[]")  # hidden: never data
    # mixed formats need an explicit type per channel; read each file as its own channel
    csv_blocks = list(iter_blocks(Channel("train", str(tmp_path / "a.csv")), 3, 16))
    pbr_blocks = list(iter_blocks(Channel("train", str(tmp_path / "b.pbr")), 3, 16))
    assert [len(b) for b in csv_blocks] == [16, 16, 8]
    assert [b.first_record for b in csv_blocks] == [0, 16, 32]
    assert [len(b) for b in pbr_blocks] == [16, 14]
    got = np.concatenate([b.features for b in csv_blocks + pbr_blocks])
    np.testing.assert_array_equal(got, x.astype(np.float32))
    assert [f.name for f in list_channel(str(tmp_path))] == ["a.csv", "b.pbr"]


def test_check_block_names_record() -> None:
    feats = np.zeros((5, 2), np.float32)
    feats[3, 1] = np.inf
    with pytest.raises(DataError, match=r"f.csv, record 14: features contain NaN or infinity"):
        check_block(Block(feats, np.zeros(5, np.float32), "f.csv", 10), True)
    labels = np.array([0, 1, np.nan, 0, 0], np.float32)
    with pytest.raises(DataError, match=r"f.pbr, record 3: the label is NaN"):
        check_block(Block(np.zeros((5, 2), np.float32), labels, "f.pbr", 0), True)
    with pytest.raises(DataError, match=r"f.pbr, record 1: the record has no label"):
        check_block(Block(np.zeros((5, 2), np.float32), None, "f.pbr", 0), True)
    check_block(Block(np.zeros((5, 2), np.float32), None, "f.pbr", 0), False)


def test_missing_location() -> None:
    with pytest.raises(ChannelError, match=r"'/no/such/dir' does not exist"):
        list_channel("/no/such/dir")


def test_s3_without_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_fsspec(name: str, *args: object, **kwargs: object) -> object:
        if name == "fsspec":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    with pytest.raises(ImportError, match=r"pip install 'openknn\[s3\]'"):
        list_channel("s3://bucket/prefix/")


def test_progress_logs_without_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with Progress("reading train", every=0.0, bar=False) as progress:
        progress.update(100)
        progress.update(50)
    assert progress.records == 150
    assert "reading train: 150 records read" in caplog.text
