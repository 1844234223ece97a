"""Model loading checks before it allocates (issue 10, part 6): tar members bounded by their
headers and by what the JSON allows, every JSON field checked against the hyperparameter
table, the faiss index and the labels against the JSON; a bad model is a ModelError naming
the file and the field, never a model that loads and then fails its requests."""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core.model import KnnModel, ModelMeta
from openknn.core.reduction import make_projection
from openknn.errors import ModelError
from openknn.jobs import artifact

RNG = np.random.default_rng(10)
X = RNG.standard_normal((300, 8)).astype(np.float32)
Y = RNG.integers(0, 3, 300).astype(np.float32)
GIB = 1 << 30


def make_model(index_type: str = "faiss.Flat", metric: str = "L2", reduce: bool = False,
               pq_m: int | None = None) -> KnnModel:
    projection = make_projection("sign", 8, 4, seed=3) if reduce else None
    vectors = projection.apply(X) if projection else X
    config = fi.IndexConfig(index_type=index_type, metric=metric, nlist=4, pq_m=pq_m)
    index = fi.build(vectors, 3, config)
    meta = ModelMeta(
        k=3, predictor_type="classifier", feature_dim=8, index_dim=int(index.d),
        index_type=index_type, index_metric=metric, normalize=metric == "COSINE",
        num_points=int(index.ntotal),
        nprobe=64 if index_type == "faiss.HNSW" else 5,
        dimension_reduction=projection.to_json() if projection else None,
        faiss_index_ivf_nlists=fi.nlist_of(index),
        faiss_index_pq_m=int(index.pq.M) if hasattr(index, "pq") else None)
    return KnnModel(meta, index, Y, projection)


def write_edited(directory: Path, model: KnnModel, **edits: Any) -> Path:
    """The model's files with its JSON edited (a value of ``DROP`` removes the key)."""
    artifact.write_model_dir(model, directory)
    path = directory / artifact.META_FILE
    meta = json.loads(path.read_text())
    meta.update(edits)
    meta = {k: v for k, v in meta.items() if v is not DROP}
    path.write_text(json.dumps(meta))
    return directory


DROP = object()


# ------------------------------------------------------------------ tar bombs


def gzip_of_zeros(header: bytes, zeros: int, tail: bytes = b"", chunk: int = 1 << 20) -> bytes:
    """A valid gzip of ``header`` + ``zeros`` zero bytes + ``tail``, built without compressing
    the zeros more than once: after a full flush deflate restarts, so one compressed chunk of
    zeros repeats. 2 GiB of zeros costs about 2 MB."""
    assert zeros % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    assert again == block
    end = c.compress(tail) + c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    zero_chunk = bytes(chunk)
    for _ in range(zeros // chunk):
        crc = zlib.crc32(zero_chunk, crc)
    crc = zlib.crc32(tail, crc)
    size = (len(header) + zeros + len(tail)) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head + block * (zeros // chunk)
            + end + struct.pack("<II", crc & 0xFFFFFFFF, size))


def member_header(name: str, size: int, type: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type = size, 0o644, type
    return info.tobuf(format=tarfile.GNU_FORMAT)


def plain_members(files: dict[str, bytes]) -> bytes:
    """Uncompressed tar blocks for ``files`` (no end-of-archive marker)."""
    out = b""
    for name, data in files.items():
        out += member_header(name, len(data)) + data + bytes(-len(data) % 512)
    return out


def small_meta_json(num_points: int = 100) -> bytes:
    return json.dumps({"k": 3, "predictor_type": "classifier", "feature_dim": 8,
                       "index_dim": 8, "num_points": num_points}).encode()


def refused_quickly(path: Path, pattern: str) -> tuple[float, int]:
    """Load ``path``: a ModelError matching ``pattern``; the seconds and the peak bytes
    Python allocated meanwhile."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelError, match=pattern):
            artifact.load(path)
        return time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 MB model.tar.gz whose first member, model_algo-1, declares (and holds) 2 GiB."""
    path = tmp_path_factory.mktemp("bomb") / "model.tar.gz"
    path.write_bytes(gzip_of_zeros(member_header(artifact.INDEX_FILE, 2 * GIB), 2 * GIB,
                                   bytes(1024)))
    return path


def test_the_bomb_is_a_real_gzip_of_two_gib(bomb: Path) -> None:
    """The fixture is what the issue describes: small on disk, 2 GiB declared, valid gzip."""
    assert bomb.stat().st_size < 3_000_000
    d = zlib.decompressobj(31)
    first = d.decompress(bomb.read_bytes()[:65536], 512)
    assert tarfile.TarInfo.frombuf(first, "utf-8", "surrogateescape").size == 2 * GIB


def test_tar_bomb_is_refused_from_its_header(bomb: Path) -> None:
    seconds, peak = refused_quickly(
        bomb, r"model.tar.gz: member 'model_algo-1' declares 2147483648 bytes.*before "
              r"model_algo-1.json bounds it.*pack it with model_algo-1.json first")
    assert seconds < 1.0 and peak < 8 << 20, (seconds, peak)


def test_tar_bomb_after_the_json_is_refused_by_the_json_limit(tmp_path: Path) -> None:
    """JSON first: the index may hold num_points x index_dim floats (plus headers), no more."""
    head = plain_members({artifact.META_FILE: small_meta_json(100)})
    path = tmp_path / "model.tar.gz"
    path.write_bytes(gzip_of_zeros(head + member_header(artifact.INDEX_FILE, 2 * GIB), 2 * GIB))
    seconds, peak = refused_quickly(
        path, r"model_algo-1: 2147483648 bytes, more than the \d+ that a faiss.Flat model of "
              r"num_points=100 and index_dim=8 \(its model_algo-1.json\) can take")
    assert seconds < 1.0 and peak < 8 << 20, (seconds, peak)


def test_labels_bomb_after_the_json_is_refused(tmp_path: Path) -> None:
    head = plain_members({artifact.META_FILE: small_meta_json(100)})
    path = tmp_path / "model.tar.gz"
    path.write_bytes(gzip_of_zeros(head + member_header(artifact.LABELS_FILE, GIB), GIB))
    seconds, _ = refused_quickly(path, r"model_algo-1.labels: 1073741824 bytes, more than")
    assert seconds < 1.0


def test_pax_header_bomb_is_refused_before_tarfile_reads_it(tmp_path: Path) -> None:
    """tarfile reads a pax header's data whole, before the loader sees a member."""
    path = tmp_path / "model.tar.gz"
    path.write_bytes(gzip_of_zeros(member_header("pax", GIB, tarfile.XHDTYPE), GIB))
    seconds, peak = refused_quickly(path, r"an extended tar header declares 1073741824 bytes")
    assert seconds < 1.0 and peak < 8 << 20


def test_members_read_before_the_json_are_checked_against_it(tmp_path: Path) -> None:
    """openknn writes the JSON last: an index read first is held to the JSON's limit after."""
    files = {artifact.INDEX_FILE: RNG.bytes(3 << 20), artifact.META_FILE: small_meta_json(100)}
    path = tmp_path / "model.tar.gz"
    path.write_bytes(artifact.pack(files))
    with pytest.raises(ModelError, match=r"model_algo-1: 3145728 bytes, more than the \d+ "
                                         r"that a faiss.Flat model of num_points=100"):
        artifact.load(path)


def test_too_many_or_duplicate_members_are_refused(tmp_path: Path) -> None:
    many = tmp_path / "many.tar.gz"
    many.write_bytes(artifact.pack({f"junk{i}": b"x" for i in range(70)}))
    with pytest.raises(ModelError, match=r"more than 64 archive members"):
        artifact.load(many)
    files = artifact.model_bytes(make_model())
    twice = tmp_path / "twice.tar"
    twice.write_bytes(plain_members({**files}) + plain_members(
        {artifact.LABELS_FILE: files[artifact.LABELS_FILE]}) + bytes(1024))
    with pytest.raises(ModelError, match=r"holds model_algo-1.labels twice"):
        artifact.load(twice)


def test_a_directory_file_larger_than_the_json_allows_is_not_read(tmp_path: Path) -> None:
    artifact.write_model_dir(make_model(), tmp_path)
    with open(tmp_path / artifact.INDEX_FILE, "r+b") as f:
        f.truncate(2 * GIB)  # sparse: no disk used, but stat says 2 GiB
    seconds, peak = refused_quickly(tmp_path, r"model_algo-1: 2147483648 bytes, more than")
    assert seconds < 1.0 and peak < 8 << 20


def test_an_oversized_json_is_not_read(tmp_path: Path) -> None:
    artifact.write_model_dir(make_model(), tmp_path)
    with open(tmp_path / artifact.META_FILE, "r+b") as f:
        f.truncate(GIB)
    refused_quickly(tmp_path, r"model_algo-1.json: 1073741824 bytes, more than the 33554432 "
                              r"a model JSON may take")


@pytest.mark.parametrize("index_type", ["faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ",
                                        "faiss.HNSW"])
def test_real_models_fit_their_json_limits(tmp_path: Path, index_type: str) -> None:
    """The size bounds are upper bounds: every index type round-trips through tar and dir."""
    model = make_model(index_type)
    artifact.write_model_tar(model, tmp_path / "model.tar.gz")
    artifact.write_model_dir(model, tmp_path / "dir")
    for path in (tmp_path / "model.tar.gz", tmp_path / "dir"):
        loaded = artifact.load(path)
        assert loaded.meta == model.meta
        np.testing.assert_array_equal(loaded.predict(X[:20]), model.predict(X[:20]))


def test_forged_faiss_vector_length_fails_before_faiss_allocates(tmp_path: Path) -> None:
    """A 93-byte Flat index whose codes vector claims 1 GiB: faiss would zero-fill 1 GiB
    before noticing the data is short; the loader caps faiss's vector limit at the file's
    size. Measured in a fresh process (faiss's allocations are not Python's)."""
    index = faiss.IndexFlatL2(4)
    index.add(np.ones((3, 4), np.float32))
    data = bytearray(fi.serialize(index))
    data[37:45] = struct.pack("<Q", GIB // 4)  # the float count of the codes vector
    model = make_model()
    files = artifact.model_bytes(model)
    files[artifact.INDEX_FILE] = bytes(data)
    files[artifact.LABELS_FILE] = np.zeros(3, "<f4").tobytes()
    files[artifact.META_FILE] = json.dumps({"k": 1, "predictor_type": "classifier",
                                            "feature_dim": 4, "num_points": 3}).encode()
    path = tmp_path / "model.tar.gz"
    path.write_bytes(artifact.pack(files))
    script = (
        "import resource, sys\n"
        "from openknn.jobs import artifact\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    artifact.load(sys.argv[1])\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip().splitlines()
    assert out[0].startswith("ModelError") and "model_algo-1: not a faiss index" in out[0]
    assert int(out[-1]) < 256, out  # MiB of growth; 1024 and more without the cap


@pytest.mark.parametrize("nlist", [1 << 22, 1 << 34])
def test_forged_ivf_list_count_fails_before_faiss_allocates(tmp_path: Path, nlist: int) -> None:
    """An IVFFlat whose inverted lists claim millions of lists: faiss sized its list arrays
    first (16M lists: 2.7 GB and 7 s; 2^34: std::bad_alloc, a MemoryError that crashed the
    load); the loader caps faiss's loop limit at what the file can hold."""
    model = make_model("faiss.IVFFlat")
    files = artifact.model_bytes(model)
    data = bytearray(files[artifact.INDEX_FILE])
    at = data.find(b"ilar") + 4
    assert struct.unpack_from("<Q", data, at)[0] == 4
    data[at:at + 8] = struct.pack("<Q", nlist)
    files[artifact.INDEX_FILE] = bytes(data)
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"<model>/model_algo-1: not a faiss index openknn can "
                                         r"read .*exceeds deserialization_loop_limit"):
        artifact.from_files(files)
    assert time.perf_counter() - start < 1.0
    assert faiss.get_deserialization_loop_limit() == 0  # restored for everyone else


# ------------------------------------------------------------------ JSON fields

FLAT_CASES: list[tuple[dict[str, Any], str]] = [
    ({"feature_dim": "54"}, r"'feature_dim' must be an integer in \(0, inf\), got '54' "
                            r"\(a str\)"),
    ({"feature_dim": 8.0}, r"'feature_dim' must be an integer.*got 8.0 \(a float\)"),
    ({"feature_dim": True}, r"'feature_dim' must be an integer.*got True \(a bool\)"),
    ({"feature_dim": 0}, r"'feature_dim' must be an integer in \(0, inf\), got 0"),
    ({"feature_dim": None}, r"'feature_dim' must be an integer.*got None"),
    ({"feature_dim": DROP}, r"the required key 'feature_dim' is missing"),
    ({"k": "3"}, r"'k' must be an integer in \(0, 1024\], got '3'"),
    ({"k": 0}, r"'k' must be an integer in \(0, 1024\], got 0"),
    ({"k": 1025}, r"'k' must be an integer in \(0, 1024\], got 1025"),
    ({"k": DROP}, r"the required key 'k' is missing"),
    ({"predictor_type": "ranker"}, r"'predictor_type' must be one of \{classifier, "
                                   r"regressor\}, got 'ranker'"),
    ({"index_type": "faiss.Foo"}, r"'index_type' must be one of \{faiss.Flat, "),
    ({"index_type": 3}, r"'index_type' must be one of .*got 3"),
    ({"index_metric": "FOO"}, r"'index_metric' must be one of \{L2, INNER_PRODUCT, COSINE\}, "
                              r"got 'FOO'"),
    ({"index_metric": None}, r"'index_metric' must be one of .*got None"),
    ({"index_dim": 6}, r"'index_dim' is 6, but the vectors are 8 wide, so it must be 8"),
    ({"index_dim": "8"}, r"'index_dim' must be an integer.*got '8'"),
    ({"nprobe": "5"}, r"'nprobe' must be an integer in \(0, inf\), got '5'"),
    ({"nprobe": 0}, r"'nprobe' must be an integer in \(0, inf\), got 0"),
    ({"num_points": "300"}, r"'num_points' must be an integer in \[0, inf\), got '300'"),
    ({"num_points": -1}, r"'num_points' must be an integer in \[0, inf\), got -1"),
    ({"sampling_seed": -1}, r"'sampling_seed' must be an integer in \[0, inf\), got -1"),
    ({"faiss_index_ivf_nlists": "abc"}, r"'faiss_index_ivf_nlists' must be an integer in "
                                        r"\(0, inf\), got 'abc'"),
    ({"faiss_index_pq_m": 5}, r"'faiss_index_pq_m' must be one of \{1, 2, 3, 4, 8, .*got 5"),
    ({"normalize": "false"}, r"'normalize' must be true or false, got 'false' \(a str\)"),
    ({"normalize": 0}, r"'normalize' must be true or false, got 0"),
    ({"tuning": "yes"}, r"'tuning' must be an object or null, got 'yes'"),
    ({"tuning": [1]}, r"'tuning' must be an object or null, got \[1\]"),
    ({"version": 1.0}, r"'version' must be a string, got 1.0"),
    ({"dimension_reduction": "sign"}, r"model JSON 'dimension_reduction' must be an object"),
    ({"dimension_reduction": {"type": "pca", "seed": 1, "input_dim": 8, "target_dim": 4}},
     r"dimension reduction 'type' must be one of"),
    ({"dimension_reduction": {"type": "sign", "seed": 1, "input_dim": 9, "target_dim": 4}},
     r"'dimension_reduction' input_dim=9 does not match feature_dim=8"),
    ({"center": "abc"}, r"'center' must be null or a list of finite numbers, got 'abc'"),
    ({"center": [0.0] * 7 + ["x"]}, r"'center' must be null or a list of finite numbers"),
    ({"center": [0.0] * 7 + [math.nan]}, r"'center' must be null or a list of finite numbers"),
    ({"center": [0.0] * 9}, r"'center' has 9 values; expected 8"),
    ({"center": [0.0] * 8, "index_metric": "INNER_PRODUCT"},
     r"'center' is set but index_metric is 'INNER_PRODUCT'"),
]


@pytest.mark.parametrize(("edits", "pattern"), FLAT_CASES,
                         ids=[next(iter(e)) + "=" + repr(next(iter(e.values())))[:20]
                              for e, _ in FLAT_CASES])
def test_each_bad_json_field_is_refused_at_load(tmp_path: Path, edits: dict[str, Any],
                                               pattern: str) -> None:
    write_edited(tmp_path, make_model(), **edits)
    with pytest.raises(ModelError, match=r"model_algo-1.json: " + pattern):
        artifact.load(tmp_path)


def test_not_an_object(tmp_path: Path) -> None:
    artifact.write_model_dir(make_model(), tmp_path)
    (tmp_path / artifact.META_FILE).write_text("[1, 2]")
    with pytest.raises(ModelError, match=r"model_algo-1.json: expected a JSON object, got list"):
        artifact.load(tmp_path)


@pytest.mark.parametrize(("index_type", "edits", "pattern"), [
    ("faiss.IVFFlat", {"faiss_index_ivf_nlists": "abc"},
     r"model_algo-1.json: 'faiss_index_ivf_nlists' must be an integer"),
    ("faiss.IVFFlat", {"faiss_index_ivf_nlists": "auto"},
     r"model_algo-1.json: 'faiss_index_ivf_nlists' must be an integer.*got 'auto'"),
    ("faiss.IVFFlat", {"faiss_index_ivf_nlists": 5},
     r"model_algo-1: the index has 4 lists, but faiss_index_ivf_nlists is 5"),
    ("faiss.IVFFlat", {"nprobe": "all"}, r"model_algo-1.json: 'nprobe' must be an integer"),
    ("faiss.IVFPQ", {"faiss_index_pq_m": 4},
     r"model_algo-1: the index has 2 sub-quantisers, but faiss_index_pq_m is 4"),
    ("faiss.IVFPQ", {"faiss_index_pq_m": 3},
     r"model_algo-1.json: 'index_dim' is 8, but the vectors are 8 wide \(padded to a multiple "
     r"of faiss_index_pq_m=3\), so it must be 9"),
    ("faiss.HNSW", {"nprobe": 5000},
     r"model_algo-1.json: 'nprobe' must be an integer in \[1, 4096\], got 5000"),
])
def test_bad_index_fields(tmp_path: Path, index_type: str, edits: dict[str, Any],
                          pattern: str) -> None:
    model = make_model(index_type, pq_m=2 if index_type == "faiss.IVFPQ" else None)
    write_edited(tmp_path, model, **edits)
    with pytest.raises(ModelError, match=pattern):
        artifact.load(tmp_path)


# ------------------------------------------------------------------ the index against the JSON


@pytest.mark.parametrize(("index_type", "metric", "edits", "pattern"), [
    ("faiss.Flat", "L2", {"index_metric": "INNER_PRODUCT"},
     r"the index measures L2, but index_metric is 'INNER_PRODUCT' \(inner product\)"),
    ("faiss.Flat", "L2", {"index_metric": "COSINE", "normalize": True},
     r"the index measures L2, but index_metric is 'COSINE'"),
    ("faiss.HNSW", "INNER_PRODUCT", {"index_metric": "L2"},
     r"the index measures inner product, but index_metric is 'L2'"),
    ("faiss.Flat", "L2", {"index_type": "faiss.IVFFlat"},
     r"the index is a IndexFlatL2, but index_type is 'faiss.IVFFlat' \(faiss IndexIVFFlat\)"),
    ("faiss.HNSW", "L2", {"index_type": "faiss.Flat"},
     r"the index is a IndexHNSWFlat, but index_type is 'faiss.Flat'"),
    ("faiss.IVFPQ", "L2", {"index_type": "faiss.IVFFlat"},
     r"the index is a IndexIVFPQ, but index_type is 'faiss.IVFFlat'"),
    ("faiss.Flat", "L2", {"num_points": 299},
     r"the index holds 300 points, but num_points is 299"),
])
def test_index_must_match_the_json(tmp_path: Path, index_type: str, metric: str,
                                   edits: dict[str, Any], pattern: str) -> None:
    write_edited(tmp_path, make_model(index_type, metric), **edits)
    with pytest.raises(ModelError, match=r"model_algo-1: " + pattern):
        artifact.load(tmp_path)


def test_index_dim_must_match_the_index(tmp_path: Path) -> None:
    """index_dim agrees with feature_dim, so the mismatch is in the index: 8-d, JSON says 6."""
    model = make_model()
    files = artifact.model_bytes(model)
    narrow = fi.build(X[:, :6], 3, fi.IndexConfig())
    files[artifact.INDEX_FILE] = fi.serialize(narrow)
    with pytest.raises(ModelError, match=r"<model>/model_algo-1: the index holds 6-dimensional "
                                         r"vectors, but index_dim is 8"):
        artifact.from_files(files)


def test_an_empty_index_is_refused(tmp_path: Path) -> None:
    files = artifact.model_bytes(make_model())
    files[artifact.INDEX_FILE] = fi.serialize(faiss.IndexFlatL2(8))
    files[artifact.LABELS_FILE] = b""
    meta = json.loads(files[artifact.META_FILE])
    files[artifact.META_FILE] = json.dumps({**meta, "num_points": 0}).encode()
    with pytest.raises(ModelError, match=r"the index holds no points"):
        artifact.from_files(files)


def test_garbage_index_is_a_model_error() -> None:
    files = artifact.model_bytes(make_model())
    files[artifact.INDEX_FILE] = b"IxF2" + bytes(20)
    with pytest.raises(ModelError, match=r"model_algo-1: not a faiss index openknn can read"):
        artifact.from_files(files)


# ------------------------------------------------------------------ labels


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize(("labels", "pattern"), [
    (lambda: npy(np.array(["a"] * 300)), r"labels must be numbers .*dtype <U1"),
    (lambda: npy(np.array([{"a": 1}] * 300, dtype=object)), r"labels must be numbers .*object"),
    (lambda: npy(np.ones(300, bool)), r"labels must be numbers .*dtype bool"),
    (lambda: npy(np.ones(300, np.complex64)), r"labels must be numbers .*complex64"),
    (lambda: npy(np.ones((300, 2), np.float32)), r"labels of shape \(300, 2\)"),
    (lambda: npy(np.ones(299, np.float32)), r"299 labels for 300 indexed points"),
    (lambda: npy(np.ones(300, np.float32))[:-8],
     r"the .npy header declares shape \(300,\).*1192 bytes"),
    (lambda: np.r_[np.ones(299), np.nan].astype("<f4").tobytes(),
     r"label 299 is nan; labels must be finite"),
    (lambda: b"\x93NUMPY garbage", r"not a readable .npy file"),
])
def test_bad_labels_are_a_model_error(tmp_path: Path, labels: Callable[[], bytes],
                                      pattern: str) -> None:
    artifact.write_model_dir(make_model(), tmp_path)
    (tmp_path / artifact.LABELS_FILE).write_bytes(labels())
    with pytest.raises(ModelError, match=r"model_algo-1.labels: " + pattern):
        artifact.load(tmp_path)


@pytest.mark.parametrize("array", [Y.astype(np.float64), Y.astype(np.int64),
                                   Y.astype(">i4").reshape(-1, 1), Y.astype(np.uint8)])
def test_numeric_npy_labels_load(tmp_path: Path, array: np.ndarray) -> None:
    artifact.write_model_dir(make_model(), tmp_path)
    (tmp_path / artifact.LABELS_FILE).write_bytes(npy(array))
    np.testing.assert_array_equal(artifact.load(tmp_path).labels, Y)


# ------------------------------------------------------------------ older and current models


def test_an_old_minimal_json_still_loads(tmp_path: Path) -> None:
    """Only the required keys (older writers): defaults fill the rest, no size from the JSON."""
    artifact.write_model_dir(make_model(), tmp_path)
    (tmp_path / artifact.META_FILE).write_text(json.dumps(
        {"k": 3, "predictor_type": "regressor", "feature_dim": 8}))
    loaded = artifact.load(tmp_path)
    assert loaded.meta.index_dim == 8 and loaded.meta.num_points == 0
    assert loaded.predict(X[:5]).shape == (5,)


def test_num_points_zero_means_not_recorded(tmp_path: Path) -> None:
    write_edited(tmp_path, make_model(), num_points=0, faiss_index_ivf_nlists=None)
    assert artifact.load(tmp_path).meta.num_points == 0


@pytest.mark.parametrize(("index_type", "metric", "reduce"), [
    ("faiss.Flat", "COSINE", True), ("faiss.IVFPQ", "INNER_PRODUCT", False),
    ("faiss.HNSW", "L2", True), ("faiss.IVFFlat", "COSINE", False)])
def test_current_models_load(tmp_path: Path, index_type: str, metric: str,
                             reduce: bool) -> None:
    model = make_model(index_type, metric, reduce, pq_m=4 if index_type == "faiss.IVFPQ" else None)
    artifact.write_model_tar(model, tmp_path / "model.tar.gz")
    loaded = artifact.load(tmp_path / "model.tar.gz")
    assert loaded.meta == model.meta
    np.testing.assert_array_equal(loaded.predict(X[:10]), model.predict(X[:10]))


def test_ivfpq_without_index_dim_is_padded_from_pq_m(tmp_path: Path) -> None:
    """An IVFPQ JSON without index_dim: the padding follows from faiss_index_pq_m."""
    x = np.ascontiguousarray(np.c_[X, X[:, :2]])  # 10 features, m=4: the index is 12-d
    config = fi.IndexConfig(index_type="faiss.IVFPQ", nlist=4, pq_m=4)
    index = fi.build(x, 3, config)
    meta = ModelMeta(k=3, predictor_type="classifier", feature_dim=10, index_dim=12,
                     index_type="faiss.IVFPQ", num_points=300, faiss_index_ivf_nlists=4,
                     faiss_index_pq_m=4)
    write_edited(tmp_path, KnnModel(meta, index, Y), index_dim=DROP)
    assert artifact.load(tmp_path).meta.index_dim == 12


def test_a_center_when_the_model_has_one(tmp_path: Path) -> None:
    """``center`` (the L2 shift) is checked whether or not ModelMeta has the field yet."""
    write_edited(tmp_path, make_model(), center=[0.0] * 8)
    loaded = artifact.load(tmp_path)
    if "center" in ModelMeta.__dataclass_fields__:
        assert loaded.meta.center == [0.0] * 8
