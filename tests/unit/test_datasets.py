"""datasets.py: covtype layouts (UCI and Kaggle give the same rows), the tutorial's split,
channel writing, Fashion-MNIST channels, and the verified, cached download (loopback only)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from openknn.errors import ChannelError, ClientError, DataError
from openknn.formats import recordio
from openknn.jobs import datasets

from ..conftest import shared_file

KAGGLE = ("kaggle-forest-cover-type-prediction_train.csv.gz",)
HEADER = ("Id,Elevation,Aspect,Slope,Horizontal_Distance_To_Hydrology,"
          "Vertical_Distance_To_Hydrology,Horizontal_Distance_To_Roadways,Hillshade_9am,"
          "Hillshade_Noon,Hillshade_3pm,Horizontal_Distance_To_Fire_Points,"
          + ",".join(f"Wilderness_Area{i}" for i in range(1, 5)) + ","
          + ",".join(f"Soil_Type{i}" for i in range(1, 41)) + ",Cover_Type")


def synthetic_rows(n: int = 20, seed: int = 0) -> np.ndarray:
    """UCI-shaped integer rows: 10 measurements (some negative), 44 flags, a label 1..7."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 55), np.int64)
    rows[:, :10] = rng.integers(-150, 7000, (n, 10))
    rows[np.arange(n), 10 + rng.integers(0, 4, n)] = 1
    rows[np.arange(n), 14 + rng.integers(0, 40, n)] = 1
    rows[:, 54] = rng.integers(1, 8, n)
    return rows


def write_lines(path: Path, lines: list[str]) -> Path:
    text = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return path


def uci_lines(rows: np.ndarray) -> list[str]:
    return [",".join(str(v) for v in row) for row in rows]


def kaggle_lines(rows: np.ndarray) -> list[str]:
    return [HEADER] + [f"{i},{line}" for i, line in enumerate(uci_lines(rows), 1)]


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_synthetic_uci_and_kaggle_layouts_give_identical_rows(tmp_path: Path,
                                                              suffix: str) -> None:
    rows = synthetic_rows()
    uci = write_lines(tmp_path / f"covtype.data{suffix}", uci_lines(rows))
    kaggle = write_lines(tmp_path / f"train.csv{suffix}", kaggle_lines(rows))
    assert datasets.covtype_layout(uci) == "uci"
    assert datasets.covtype_layout(kaggle) == "kaggle"
    a, b = datasets.load_covtype(uci), datasets.load_covtype(kaggle)
    assert a.dtype == np.float64 and a.shape == (20, 55)
    np.testing.assert_array_equal(a, rows.astype(np.float64))
    np.testing.assert_array_equal(a, b)


def test_real_kaggle_rows_equal_the_uci_file_cut_from_them(tmp_path: Path) -> None:
    path = shared_file("covtype", *KAGGLE)
    with gzip.open(path, "rt") as f:
        lines = [f.readline().rstrip("\n") for _ in range(51)]
    assert lines[0].startswith("Id,")
    kaggle = write_lines(tmp_path / "train.csv", lines)
    uci = write_lines(tmp_path / "covtype.data.gz", [ln.split(",", 1)[1] for ln in lines[1:]])
    np.testing.assert_array_equal(datasets.load_covtype(kaggle), datasets.load_covtype(uci))
    full = datasets.load_covtype(path)
    assert full.shape == (15120, 55) and full.dtype == np.float64
    # Kaggle's row Id=1 is UCI covtype.data's first row (../shared/data/covtype/README.md)
    assert full[0, :10].tolist() == [2596, 51, 3, 258, 0, 510, 221, 232, 148, 6279]
    assert full[0, 54] == 5 and np.bincount(full[:, 54].astype(int)).tolist() == [0] + [2160] * 7


@pytest.mark.parametrize("lines, found", [
    (["1,2,3", "4,5,6"], "3 columns"),
    ([HEADER.rsplit(",", 1)[0], "1," + ",".join(["0"] * 54)], r"55 columns \(a header row\)"),
    ([], "1 columns"),
])
def test_unrecognised_layout_names_file_columns_and_both_layouts(
        tmp_path: Path, lines: list[str], found: str) -> None:
    path = write_lines(tmp_path / "odd.csv", lines)
    with pytest.raises(DataError, match=rf"odd\.csv: not a covtype file: .*{found}.*"
                                        r"UCI covtype\.data .*55 integer columns.*"
                                        r"Kaggle's train\.csv .*'Id,', 56 columns"):
        datasets.load_covtype(path)


def test_a_bad_row_after_a_good_first_line_is_a_data_error(tmp_path: Path) -> None:
    lines = uci_lines(synthetic_rows(5))
    lines[3] = lines[3].rsplit(",", 1)[0]
    path = write_lines(tmp_path / "covtype.data", lines)
    with pytest.raises(DataError, match=r"covtype\.data: .*Expected 55 columns, got 54"):
        datasets.load_covtype(path)
    lines[3] = uci_lines(synthetic_rows(5))[3].replace(",", ",x", 1)
    with pytest.raises(DataError, match=r"covtype\.data: .*x"):
        datasets.load_covtype(write_lines(path, lines))


def test_a_header_only_kaggle_file_holds_no_rows(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "train.csv", [HEADER])
    with pytest.raises(DataError, match="holds no data rows"):
        datasets.load_covtype(path)


def test_covtype_file_checks_the_local_path(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match=r"nope\.csv: no such file; pass --path .*"
                                           r"kaggle-forest-cover-type-prediction"):
        datasets.covtype_file(tmp_path / "nope.csv")
    with pytest.raises(ChannelError, match="is a directory; pass --path"):
        datasets.covtype_file(tmp_path)
    path = write_lines(tmp_path / "covtype.data", uci_lines(synthetic_rows()))
    assert datasets.covtype_file(path) == path


# ---------------------------------------------------------------- the tutorial's split


def test_tutorial_split_matches_the_notebook_by_hand() -> None:
    raw = synthetic_rows(101).astype(np.float64)
    before = raw.copy()
    by_hand = raw.copy()
    np.random.seed(0)
    np.random.shuffle(by_hand)
    train_size = int(0.9 * by_hand.shape[0])
    expected = (by_hand[:train_size, :-1], by_hand[:train_size, -1],
                by_hand[train_size:, :-1], by_hand[train_size:, -1])
    np.random.seed(123)
    split = datasets.tutorial_split(raw)
    assert np.random.rand() == np.random.RandomState(123).rand()  # global state untouched
    for got, want in zip(split, expected):
        np.testing.assert_array_equal(got, want)
    assert split.train_x.shape == (90, 54) and split.test_y.shape == (11,)
    np.testing.assert_array_equal(raw, before)  # the caller's array is not shuffled
    assert split.describe()[0] == "train_features shape =  (90, 54)"


# ---------------------------------------------------------------- channels


def test_covtype_channels_decode_to_the_split(tmp_path: Path) -> None:
    rows = synthetic_rows(40)
    path = write_lines(tmp_path / "train.csv.gz", kaggle_lines(rows))
    raw = datasets.load_covtype(datasets.covtype_file(path))  # as `openknn datasets covtype`
    channels = datasets.write_channels(tmp_path / "out", datasets.tutorial_split(raw))
    split = datasets.tutorial_split(rows.astype(np.float64))
    assert set(channels) == {"train_csv", "train_recordio", "test_csv", "test_recordio"}
    for part, x, y in (("train", split.train_x, split.train_y),
                       ("test", split.test_x, split.test_y)):
        folder = channels[f"{part}_recordio"]
        assert folder == tmp_path / "out" / part / "recordio"
        assert [p.name for p in folder.iterdir()] == [f"{part}.pbr"]
        data = (folder / f"{part}.pbr").read_bytes()
        assert data == recordio.dense_to_bytes(x, y)  # float64, as the tutorial writes it
        features, labels = recordio.decode_features(data, 54)
        np.testing.assert_array_equal(features, x)
        np.testing.assert_array_equal(labels, y)
        folder = channels[f"{part}_csv"]
        assert [p.name for p in folder.iterdir()] == [f"{part}.csv"]
        text = (folder / f"{part}.csv").read_text()
        assert "." not in text and text.splitlines()[0].startswith(f"{int(y[0])},")
        np.testing.assert_array_equal(np.loadtxt(folder / f"{part}.csv", delimiter=","),
                                      np.column_stack([y, x]))


def test_write_channels_formats_and_refusals(tmp_path: Path) -> None:
    split = datasets.tutorial_split(synthetic_rows(30).astype(np.float64))
    channels = datasets.write_channels(tmp_path, split, ["csv"])
    assert set(channels) == {"train_csv", "test_csv"} and not (tmp_path / "train/recordio").exists()
    assert datasets.write_channels(tmp_path, split, ["csv"]) == channels  # a rerun overwrites
    (tmp_path / "test" / "csv" / "old.csv").write_text("1,2\n")
    with pytest.raises(ChannelError, match=r"csv already holds old\.csv; a channel folder must "
                                           r"hold only test\.csv"):
        datasets.write_channels(tmp_path, split, ["recordio", "csv"])
    assert not (tmp_path / "train" / "recordio").exists()  # checked before writing anything
    with pytest.raises(ClientError, match="unknown format 'json'"):
        datasets.write_channels(tmp_path / "b", split, ["json"])


def test_csv_keeps_fractions_when_the_data_is_not_integral(tmp_path: Path) -> None:
    split = datasets.Split(np.array([[0.5, 2.0]]), np.array([1.0]), np.zeros((1, 2)),
                           np.array([0.0]))
    channels = datasets.write_channels(tmp_path, split, ["csv"])
    assert (channels["train_csv"] / "train.csv").read_text() == "1.0,0.5,2.0\n"
    assert (channels["test_csv"] / "test.csv").read_text() == "0,0,0\n"


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_channels_from_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = {"train": rng.integers(0, 256, (12, 28, 28)),
              "t10k": rng.integers(0, 256, (5, 28, 28))}
    labels = {"train": rng.integers(0, 10, 12), "t10k": rng.integers(0, 10, 5)}
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[prefix])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[prefix])
    channels = datasets.write_channels(tmp_path / "out", datasets.fashion_mnist_split(tmp_path))
    data = (channels["test_recordio"] / "test.pbr").read_bytes()
    x, y = recordio.decode_features(data, 784)
    np.testing.assert_array_equal(x, images["t10k"].reshape(5, 784))
    np.testing.assert_array_equal(y, labels["t10k"])
    assert recordio.read_records(data)[0].features["values"].values.dtype == np.float32
    rows = np.loadtxt(channels["train_csv"] / "train.csv", delimiter=",")
    np.testing.assert_array_equal(rows[:, 0], labels["train"])
    np.testing.assert_array_equal(rows[:, 1:], images["train"].reshape(12, 784))
    with pytest.raises(DataError, match=r"Fashion-MNIST not found in .*; pass --path"):
        datasets.fashion_mnist_split(tmp_path / "missing")


# ---------------------------------------------------------------- download (loopback only)

PAYLOAD = gzip.compress(b"".join(line.encode() + b"\n" for line in uci_lines(synthetic_rows())))
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """A loopback HTTP server: ``/data.gz`` gives PAYLOAD, anything else 404; counts GETs."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                if self.path != "/data.gz":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       kwargs={"poll_interval": 0.01})  # a quick shutdown()
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/covtype.data.gz"


def test_download_verifies_caches_and_reuses(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "cache" / "covtype.data.gz"
    assert datasets.download([f"{server.url}/data.gz"], target, SHA, 5) == target
    assert target.read_bytes() == PAYLOAD and server.requests == ["/data.gz"]
    assert datasets.download([f"{server.url}/data.gz"], target, SHA, 5) == target
    assert server.requests == ["/data.gz"]  # the cached file was reused, no request
    assert [p.name for p in target.parent.iterdir()] == ["covtype.data.gz"]
    target.write_bytes(b"damaged")
    datasets.download([f"{server.url}/data.gz"], target, SHA, 5)
    assert target.read_bytes() == PAYLOAD and len(server.requests) == 2


def test_download_with_a_wrong_sha256_fails_and_leaves_no_file(server: Server,
                                                               tmp_path: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(DataError, match=rf"data\.gz: the downloaded covtype\.data\.gz has "
                                        rf"sha256 {SHA}, expected {wrong}; it was deleted"):
        datasets.download([f"{server.url}/data.gz"], tmp_path / "covtype.data.gz", wrong, 5)
    assert list(tmp_path.iterdir()) == []


def test_download_falls_back_to_the_next_url(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "covtype.data.gz"
    datasets.download([f"{server.url}/gone.gz", f"{server.url}/data.gz"], target, SHA, 5)
    assert target.read_bytes() == PAYLOAD and server.requests == ["/gone.gz", "/data.gz"]


def test_unreachable_urls_fail_naming_each_url_and_path(server: Server, tmp_path: Path) -> None:
    closed = closed_port_url()
    with pytest.raises(datasets.DownloadError,
                       match=rf"could not download covtype\.data\.gz from {closed} \(.*\); "
                             rf"{server.url}/gone\.gz \(HTTP 404 .*\); .*pass --path") as info:
        datasets.download([closed, f"{server.url}/gone.gz"], tmp_path / "covtype.data.gz",
                          SHA, 5)
    assert isinstance(info.value, ClientError) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_covtype_file_downloads_into_the_cache_from_the_environment(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "COVTYPE_SHA256", SHA)
    env = {datasets.CACHE_ENV: str(tmp_path),
           datasets.COVTYPE_URLS_ENV: f" {server.url}/data.gz , "}
    path = datasets.covtype_file(env=env)
    assert path == tmp_path / "covtype" / "covtype.data.gz"
    assert datasets.load_covtype(path).shape == (20, 55)
    env[datasets.COVTYPE_URLS_ENV] = closed_port_url()
    assert datasets.covtype_file(env=env) == path  # cached: no network needed
    assert server.requests == ["/data.gz"]
    with pytest.raises(datasets.DownloadError, match=r"pass --path .*kaggle-forest-cover"):
        datasets.covtype_file(cache_dir=tmp_path / "other", env=env)


def test_default_cache_and_urls() -> None:
    assert datasets.default_cache_dir({}) == Path("~/.cache/openknn").expanduser()
    assert datasets.default_cache_dir({"OPENKNN_CACHE": "/x"}) == Path("/x")
    assert datasets.covtype_urls({}) == datasets.COVTYPE_URLS
    assert datasets.COVTYPE_URLS[0].startswith("https://archive.ics.uci.edu/")
    assert datasets.covtype_urls({"OPENKNN_COVTYPE_URLS": "a,b"}) == ("a", "b")
