"""Real data sets: Fashion-MNIST IDX and ``.ivecs`` readers, the covtype download (verified,
cached), its loaders and the tutorial's split, and writing them as train/test channels."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ..errors import ChannelError, ClientError, DataError, DownloadError
from ..settings import CACHE as CACHE_ENV
from ..settings import COVTYPE_URLS as COVTYPE_URLS_ENV
from .outputs import atomic_file
from .storage import is_remote, join, list_channel, local_location, staged_output

log = logging.getLogger(__name__)

# Debian's dataset-fashion-mnist package installs the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _open(path: Path) -> bytes:
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
        return f.read()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic 0x0000080X with X dims, then uint8 data)."""
    data = _open(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not a uint8 IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", ndim, 4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {body.size} values")
    return body.reshape(shape)


def read_ivecs(path: Path) -> np.ndarray:
    """A texmex ``.ivecs`` file: per row an int32 count k, then k int32 values."""
    raw = np.frombuffer(_open(path), "<i4")
    k = int(raw[0])
    return raw.reshape(-1, k + 1)[:, 1:]


def fashion_mnist(directory: Path | None = None) -> dict[str, np.ndarray]:
    """Fashion-MNIST as float32 rows of 784 pixels and float32 labels."""
    root = directory or DEBIAN_FASHION_MNIST
    missing = [name for name in FASHION_FILES.values() if not (root / name).exists()]
    if missing:
        raise DataError(f"Fashion-MNIST not found in {root} (missing {', '.join(missing)}); "
                        "pass --path to a folder with the IDX files, or install Debian's "
                        "dataset-fashion-mnist package")
    out = {key: read_idx(root / name) for key, name in FASHION_FILES.items()}
    for key in ("train_images", "test_images"):
        out[key] = out[key].reshape(out[key].shape[0], -1).astype(np.float32)
    for key in ("train_labels", "test_labels"):
        out[key] = out[key].astype(np.float32)
    return out


# ---------------------------------------------------------------- covtype: where it comes from

# Read from an injected mapping (the environment by default) when a function runs.
DEFAULT_CACHE = "~/.cache/openknn"

COVTYPE_NAME = "covtype.data.gz"
COVTYPE_SHA256 = "614360d0257557dd1792834a85a1cdebfadc3c4f30b011d56afee7ffb5b15771"
COVTYPE_URLS = (  # the tutorial's URL, then scikit-learn's mirror (fetch_covtype)
    "https://archive.ics.uci.edu/ml/machine-learning-databases/covtype/covtype.data.gz",
    "https://ndownloader.figshare.com/files/5976039",
)
COVTYPE_HINT = ("pass --path to a local copy of covtype.data[.gz] or Kaggle's train.csv[.gz], "
                "e.g. --path kaggle-forest-cover-type-prediction_train.csv.gz")
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                   TimeoutError, ValueError)
_CHUNK = 1 << 20


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$OPENKNN_CACHE``, else ``~/.cache/openknn``."""
    env = os.environ if env is None else env
    return Path(env.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def covtype_urls(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Where ``covtype.data.gz`` is fetched from, in order (``$OPENKNN_COVTYPE_URLS`` wins)."""
    env = os.environ if env is None else env
    urls = tuple(u.strip() for u in env.get(COVTYPE_URLS_ENV, "").split(",") if u.strip())
    return urls or COVTYPE_URLS


def covtype_file(path: str | os.PathLike[str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, *,
                 env: Mapping[str, str] | None = None, timeout: float = 60.0) -> Path:
    """``path`` where given (it must be a file), else UCI's ``covtype.data.gz``: from the
    cache when its sha256 is right, otherwise downloaded and verified."""
    if path is not None:
        local = Path(path)
        if not local.is_file():
            what = "is a directory" if local.is_dir() else "no such file"
            raise ChannelError(f"{local}: {what}; {COVTYPE_HINT}")
        return local
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir(env)
    return download(covtype_urls(env), root / "covtype" / COVTYPE_NAME, COVTYPE_SHA256,
                    timeout, hint=COVTYPE_HINT)


# ---------------------------------------------------------------- downloading


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _byte_progress(total: int | None, what: str) -> Iterator[Callable[[int], object]]:
    """A tqdm bar on a terminal; elsewhere one log line before and one after."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit="B", unit_scale=True, desc=what, leave=False) as bar:
            yield bar.update
        return
    log.info("downloading %s (%s bytes)", what, total if total is not None else "unknown")
    start, done = time.perf_counter(), [0]
    yield lambda n: done.__setitem__(0, done[0] + n)
    log.info("downloaded %d bytes in %.1f s", done[0], time.perf_counter() - start)


def _fetch(url: str, out: BinaryIO, timeout: float) -> str:
    """Stream ``url`` into ``out``; the sha256 of what came. Network failures raise one of
    ``_NETWORK_ERRORS``."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "openknn"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        with _byte_progress(int(length) if length else None, url) as update:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                update(len(chunk))
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line


def download(urls: Sequence[str], target: Path, sha256: str, timeout: float = 60.0, *,
             hint: str = "pass --path to a local copy instead") -> Path:
    """``target``, reused when its sha256 is right, else fetched from the first of ``urls``
    that answers, written atomically and verified (a mismatch deletes it: DataError)."""
    if target.is_file():
        have = sha256_file(target)
        if have == sha256:
            log.info("using the cached %s", target)
            return target
        log.warning("%s has sha256 %s, expected %s; downloading it again", target, have, sha256)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClientError(f"cannot create the cache folder {target.parent} ({_reason(exc)}); "
                          f"set {CACHE_ENV} or --cache-dir to a writable folder") from None
    failures = []
    for url in urls:
        try:
            with atomic_file(target) as f:
                got = _fetch(url, f, timeout)
                if got != sha256:
                    raise DataError(f"{url}: the downloaded {target.name} has sha256 {got}, "
                                    f"expected {sha256}; it was deleted. Try again later, or "
                                    f"{hint}")
            return target
        except _NETWORK_ERRORS as exc:
            if isinstance(exc, DataError):
                raise
            failures.append(f"{url} ({_reason(exc)})")
    raise DownloadError(f"could not download {target.name} from {'; '.join(failures)}; "
                        f"without network access, {hint}")


# ---------------------------------------------------------------- covtype: rows and split

UCI_COLUMNS, KAGGLE_COLUMNS = 55, 56
LAYOUTS = ("UCI covtype.data (no header, 55 integer columns, label last) or Kaggle's "
           "train.csv (a header row starting with 'Id,', 56 columns)")


class Split(NamedTuple):
    """Train and test features and labels, in the tutorial's order."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    def describe(self) -> list[str]:
        """What the tutorial prints: ``print('train_features shape = ', x.shape)`` and so on."""
        names = ("train_features", "train_labels", "test_features", "test_labels")
        return [f"{name} shape =  {array.shape}" for name, array in zip(names, self)]


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _first_line(path: Path) -> str:
    try:
        with (gzip.open(path, "rt", encoding="utf-8-sig") if _is_gzip(path)
              else open(path, encoding="utf-8-sig")) as f:
            return f.readline(1 << 16).strip()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as text ({_reason(exc)}); expected "
                        f"{LAYOUTS}") from None


def covtype_layout(path: Path) -> str:
    """``"uci"`` or ``"kaggle"``, from the first line of ``path`` (gzip or plain)."""
    fields = [f.strip() for f in _first_line(path).split(",")]
    if fields[0] == "Id" and len(fields) == KAGGLE_COLUMNS:
        return "kaggle"
    if len(fields) == UCI_COLUMNS and all(f.lstrip("-").isdigit() for f in fields):
        return "uci"
    header = " (a header row)" if not fields[0].lstrip("-").isdigit() else ""
    raise DataError(f"{path}: not a covtype file: its first line has {len(fields)} columns"
                    f"{header}; expected {LAYOUTS}")


def _read_columns(path: Path, columns: int, skip_rows: int) -> list[np.ndarray]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(columns)]
    read = pacsv.ReadOptions(column_names=names, skip_rows=skip_rows, block_size=16 << 20)
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64()))
    try:
        with pa.input_stream(str(path), compression="gzip" if _is_gzip(path) else None) as f:
            table = pacsv.read_csv(f, read_options=read, convert_options=convert)
    except (pa.ArrowException, OSError, EOFError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise DataError(f"{path}: {message}; expected {LAYOUTS}") from None
    if any(column.null_count for column in table.columns):
        raise DataError(f"{path}: some fields are empty; expected {LAYOUTS}")
    return [column.to_numpy() for column in table.columns]


def load_covtype(path: str | os.PathLike[str]) -> np.ndarray:
    """UCI-shaped float64 rows ``(N, 55)`` (54 features, label last) from UCI's
    ``covtype.data[.gz]`` or Kaggle's ``train.csv[.gz]`` (its Id column dropped)."""
    path = Path(path)
    kaggle = covtype_layout(path) == "kaggle"
    columns = _read_columns(path, KAGGLE_COLUMNS if kaggle else UCI_COLUMNS, int(kaggle))
    if kaggle:
        columns = columns[1:]
    if not len(columns[0]):
        raise DataError(f"{path}: holds no data rows; expected {LAYOUTS}")
    return np.column_stack(columns)


def tutorial_split(raw: np.ndarray) -> Split:
    """The notebook's split: ``np.random.seed(0); np.random.shuffle(raw)``, the first
    ``int(0.9 * N)`` rows train, the label last. Shuffles a copy, with the same permutation
    and without touching numpy's global random state."""
    rows = np.array(raw, copy=True)
    np.random.RandomState(0).shuffle(rows)
    cut = int(0.9 * rows.shape[0])
    return Split(rows[:cut, :-1], rows[:cut, -1], rows[cut:, :-1], rows[cut:, -1])


# ---------------------------------------------------------------- channels

FORMATS = ("csv", "recordio")
_SUFFIX = {"csv": "csv", "recordio": "pbr"}


def _integral(array: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(array)) and np.all(array == np.trunc(array))
                and np.all(np.abs(array) < 2**53))


def _write_csv(f: BinaryIO, features: np.ndarray, labels: np.ndarray) -> None:
    """Label first, no header; integral data printed as integers (in the narrowest integer
    type, which halves the text encoding's time). Written in blocks."""
    from ..formats.csv import encode_csv

    integers: np.dtype[Any] | None = None
    if _integral(features) and _integral(labels) and features.size:
        low, high = min(features.min(), labels.min()), max(features.max(), labels.max())
        integers = np.result_type(np.min_scalar_type(int(low)), np.min_scalar_type(int(high)))
    step = max(1, (1 << 20) // (features.shape[1] + 1))
    for lo in range(0, len(features), step):
        block = np.column_stack([labels[lo:lo + step], features[lo:lo + step]])
        f.write(encode_csv(block if integers is None else block.astype(integers)))


def _write_recordio(f: BinaryIO, features: np.ndarray, labels: np.ndarray) -> None:
    from ..formats import recordio

    recordio.write_dense(f, features, labels)


_WRITERS = {"csv": _write_csv, "recordio": _write_recordio}


def _channel_file(output: Path, part: str, fmt: str) -> Path:
    if fmt not in _WRITERS:
        raise ClientError(f"unknown format {fmt!r}; expected some of {', '.join(FORMATS)}")
    return output / part / fmt / f"{part}.{_SUFFIX[fmt]}"


def _check_only_file(path: Path) -> None:
    """A channel folder must hold just its file, or training would read the others too."""
    if path.parent.is_dir():
        others = sorted(p.name for p in path.parent.iterdir()
                        if p.name != path.name and not p.name.startswith("."))
        if others:
            raise ChannelError(f"{path.parent} already holds {', '.join(others)}; a channel "
                               f"folder must hold only {path.name}: remove them or choose "
                               "another --output")


def write_channels(output: str | os.PathLike[str], split: Split,
                   formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """``<output>/{train,test}/<format>/{train,test}.<csv|pbr>``, each written atomically in
    a folder of its own (a channel to pass as ``--train`` / ``--test``). Returns channel
    names like ``"train_recordio"`` mapped to their folders."""
    parts = {"train": (split.train_x, split.train_y), "test": (split.test_x, split.test_y)}
    root = local_location(output, "--output")
    files = {f"{part}_{fmt}": _channel_file(root, part, fmt)
             for part in parts for fmt in formats}
    for path in files.values():
        _check_only_file(path)
    for name, path in files.items():
        part, fmt = name.split("_", 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            _WRITERS[fmt](f, *parts[part])
    return {name: path.parent for name, path in files.items()}


def write_dataset(output: str | os.PathLike[str], make_split: Callable[[], Split],
                  formats: Sequence[str] = FORMATS) -> tuple[Split, dict[str, str]]:
    """``write_channels`` to ``output``, a directory, ``file://`` URI or ``s3://`` prefix, of
    the split ``make_split`` reads (minutes, for covtype): the location is checked first (a
    missing bucket fails before any download), and in S3 the channels are written into a
    private temporary directory and uploaded only when the whole data set is written
    (``storage.staged_output``). Returns the split and each channel's location."""
    text = os.fspath(output)
    with staged_output(text, "--output") as root:
        if is_remote(text):
            for part in ("train", "test"):
                for fmt in formats:
                    _check_only_object(join(text, f"{part}/{fmt}"),
                                       _channel_file(Path(), part, fmt).name)
        split = make_split()
        written = write_channels(root, split, formats)
    if not is_remote(text):
        return split, {name: str(path) for name, path in written.items()}
    return split, {name: join(text, path.relative_to(root).as_posix())
                   for name, path in written.items()}


def _check_only_object(prefix: str, name: str) -> None:
    """``_check_only_file`` for an ``s3://`` channel prefix: it may hold only ``name``."""
    others = sorted(f.uri for f in list_channel(prefix) if f.name != name)
    if others:
        raise ChannelError(f"{prefix} already holds {', '.join(others[:3])}"
                           f"{' …' if len(others) > 3 else ''}; a channel prefix must hold "
                           f"only {name}: remove them or choose another --output")


def fashion_mnist_split(directory: Path | None = None) -> Split:
    """Fashion-MNIST's own 60,000 / 10,000 split, float32."""
    data = fashion_mnist(directory)
    return Split(data["train_images"], data["train_labels"], data["test_images"],
                 data["test_labels"])
