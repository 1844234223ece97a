"""What a model's files must satisfy before it serves: the JSON's fields against the
hyperparameter table, the byte sizes its points and dimension allow, and the faiss index and
labels against the JSON."""

from __future__ import annotations

import contextlib
import io
import json
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from ..errors import HyperparameterError, ModelError
from . import hyperparameters as hps
from .finite import first_non_finite
from .reduction import Projection

HOST = "algo-1"
INDEX_FILE = f"model_{HOST}"
LABELS_FILE = f"{INDEX_FILE}.labels"
META_FILE = f"{INDEX_FILE}.json"
MODEL_FILES = (INDEX_FILE, LABELS_FILE, META_FILE)  # the JSON last: it marks a complete model
NPY_MAGIC = b"\x93NUMPY"
MAX_META_BYTES = 32 << 20  # model_algo-1.json; its largest field, center, is index_dim numbers

VERSION = "1.0"


@dataclass
class ModelMeta:
    """The model JSON (decision 8). ``k`` and ``predictor_type`` may be edited by users."""

    k: int
    predictor_type: str
    feature_dim: int
    index_dim: int
    index_type: str = "faiss.Flat"
    index_metric: str = "L2"
    nprobe: int = 5
    dimension_reduction: dict[str, Any] | None = None
    normalize: bool = False
    sampling_seed: int = 0
    num_points: int = 0
    faiss_index_ivf_nlists: int | None = None
    faiss_index_pq_m: int | None = None
    tuning: dict[str, Any] | None = None  # _target_recall's choice (openknn.core.tuning.Tuned)
    # L2 only: a shift about the sample mean (exact in float32 for every stored value),
    # subtracted from every vector before indexing and from every query (distances are
    # translation-invariant), so float32 search does not cancel on large magnitudes or
    # offsets (openknn.core.index.center_of). None: vectors indexed as given (older models).
    center: list[float] | None = None
    version: str = VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "model_algo-1.json") -> ModelMeta:
        """Read leniently (unknown keys are ignored, absent optional keys take their defaults)
        but check every known field's type and range against the hyperparameter table
        (``openknn.core.model_files``); a bad one raises ``ModelError`` naming ``source`` and it."""
        fields = meta_fields(obj, source)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})



REQUIRED = ("k", "predictor_type", "feature_dim")
SLACK_BYTES = 1 << 20
"""Room for faiss's and ``.npy``'s headers on top of the payload a model's size predicts."""
NPY_ITEM_MAX = 8  # the widest label dtype accepted (float64 / int64)
LABEL_KINDS = "fiu"  # numpy kinds of numeric labels: float, signed and unsigned integers

# Each integer field of the model JSON and the hyperparameter whose range it has. ``nprobe`` is
# efSearch for HNSW (see _nprobe_spec). ``num_points`` 0 means "not recorded" (ModelMeta's
# default, so files from before it was written), any other value a count of points.
INT_FIELDS: dict[str, hps.Spec] = {
    "k": hps.SPECS["k"],
    "feature_dim": hps.SPECS["feature_dim"],
    "index_dim": hps.SPECS["feature_dim"],
    "nprobe": hps.SPECS["_faiss_index_nprobe"],
    "sampling_seed": hps.SPECS["_seed"],
    "num_points": hps.SPECS["_seed"],  # a count: >= 0
}
NULLABLE_INT_FIELDS: dict[str, hps.Spec] = {
    "faiss_index_ivf_nlists": hps.SPECS["faiss_index_ivf_nlists"],
    "faiss_index_pq_m": hps.SPECS["faiss_index_pq_m"],
}
CHOICE_FIELDS: dict[str, hps.Spec] = {
    "predictor_type": hps.SPECS["predictor_type"],
    "index_type": hps.SPECS["index_type"],
    "index_metric": hps.SPECS["index_metric"],
}
FAISS_TYPES: dict[str, Any] = {
    "faiss.Flat": faiss.IndexFlat,
    "faiss.IVFFlat": faiss.IndexIVFFlat,
    "faiss.IVFPQ": faiss.IndexIVFPQ,
    "faiss.HNSW": faiss.IndexHNSWFlat,
}


def _shown(value: object) -> str:
    plain_int = isinstance(value, int) and not isinstance(value, bool)
    return repr(value) if plain_int else f"{value!r} (a {type(value).__name__})"


def _in_table(spec: hps.Spec, value: Any) -> bool:
    try:
        hps._check_range(spec, value)
    except HyperparameterError:
        return False
    return True


def _int(obj: Mapping[str, Any], name: str, spec: hps.Spec, source: str) -> int:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or not _in_table(spec, value):
        kind = "an integer in" if spec.choices is None else "one of"
        allowed = spec.allowed().removeprefix("'auto' or an integer in ")
        raise ModelError(f"{source}: {name!r} must be {kind} {allowed}, got {_shown(value)}")
    return value


def _choice(obj: Mapping[str, Any], name: str, spec: hps.Spec, source: str) -> str:
    value = obj[name]
    if not isinstance(value, str) or value not in (spec.choices or ()):
        raise ModelError(f"{source}: {name!r} must be one of {spec.allowed()}, "
                         f"got {_shown(value)}")
    return value


def _typed(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str,
           source: str) -> Any:
    value = obj[name]
    if not isinstance(value, kind):
        raise ModelError(f"{source}: {name!r} must be {what}, got {_shown(value)}")
    return value


def _projection(obj: Mapping[str, Any], source: str) -> Projection | None:
    raw = obj.get("dimension_reduction")
    if raw is None:
        return None
    try:
        return Projection.from_json(raw)
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None


def _center(value: object, width: int, metric: str, source: str) -> None:
    """null, or the L2 shift: one finite number per dimension of the vectors before padding."""
    if value is None:
        return
    if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value):
        raise ModelError(f"{source}: 'center' must be null or a list of finite numbers, "
                         f"got {_shown(value)[:200]}")
    if len(value) != width:
        raise ModelError(f"{source}: 'center' has {len(value)} values; expected {width}, one "
                         "per dimension of the (reduced) vectors")
    if metric != "L2":
        raise ModelError(f"{source}: 'center' is set but index_metric is {metric!r}; only L2 "
                         "distances are unchanged by a shift")


def meta_fields(obj: object, source: str) -> dict[str, Any]:
    """The model JSON's known fields, each checked against the hyperparameter table (raises
    ``ModelError`` naming ``source`` and the field); ``index_dim`` filled in when absent."""
    if not isinstance(obj, Mapping):
        raise ModelError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    for key in REQUIRED:
        if key not in obj:
            raise ModelError(f"{source}: the required key {key!r} is missing")
    out: dict[str, Any] = {}
    for name, spec in CHOICE_FIELDS.items():
        if name in obj:
            out[name] = _choice(obj, name, spec, source)
    index_type = out.get("index_type", "faiss.Flat")
    ints = {**INT_FIELDS, "nprobe": _nprobe_spec(index_type)}
    out.update({name: _int(obj, name, spec, source) for name, spec in ints.items()
                if name in obj})
    out.update({name: _int(obj, name, spec, source) for name, spec in NULLABLE_INT_FIELDS.items()
                if obj.get(name) is not None})
    for name, kind, what in (("normalize", bool, "true or false"),
                             ("version", str, "a string"),
                             ("tuning", (dict, type(None)), "an object or null")):
        if name in obj:
            out[name] = _typed(obj, name, kind, what, source)
    projection = _projection(obj, source)
    if projection is not None:
        out["dimension_reduction"] = projection.to_json()
    _check_dims(out, projection, source)
    if "center" in obj:
        _center(obj["center"], _width(out, projection), out.get("index_metric", "L2"), source)
        out["center"] = None if obj["center"] is None else [float(v) for v in obj["center"]]
    return out


def _nprobe_spec(index_type: str) -> hps.Spec:
    return hps.SPECS["_hnsw_ef_search" if index_type == "faiss.HNSW" else "_faiss_index_nprobe"]


def _width(fields: Mapping[str, Any], projection: Projection | None) -> int:
    """The width of the vectors before PQ padding."""
    return projection.target_dim if projection is not None else int(fields["feature_dim"])


def _check_dims(fields: dict[str, Any], projection: Projection | None, source: str) -> None:
    """feature_dim, dimension_reduction and index_dim agree (index_dim padded for IVFPQ)."""
    if projection is not None and projection.input_dim != fields["feature_dim"]:
        raise ModelError(f"{source}: 'dimension_reduction' input_dim={projection.input_dim} "
                         f"does not match feature_dim={fields['feature_dim']}")
    width, m = _width(fields, projection), fields.get("faiss_index_pq_m")
    pq = fields.get("index_type") == "faiss.IVFPQ"
    expected = -(-width // m) * m if pq and m else width
    fields.setdefault("index_dim", expected)
    dim = fields["index_dim"]
    if dim != expected and not (pq and m is None and dim >= width):
        padding = f" (padded to a multiple of faiss_index_pq_m={m})" if pq and m else ""
        raise ModelError(f"{source}: 'index_dim' is {dim}, but the vectors are {width} wide"
                         f"{padding}, so it must be {expected}")


def index_bytes_limit(meta: ModelMeta) -> int | None:
    """The most bytes ``faiss.write_index`` can take for ``meta``'s index, from its points and
    dimension; None where the JSON does not record its points."""
    n, d = meta.num_points, meta.index_dim
    if n <= 0:
        return None
    nlist = meta.faiss_index_ivf_nlists or n  # faiss refuses to train more lists than points
    lists = nlist * (4 * d + 24)  # the coarse centroids and each list's size and header
    if meta.index_type == "faiss.IVFFlat":
        payload = n * (4 * d + 8) + lists  # a vector and an int64 id per point
    elif meta.index_type == "faiss.IVFPQ":
        m = meta.faiss_index_pq_m or d  # a code of m bytes (8-bit PQ, m <= d)
        payload = n * (m + 8) + lists + 4 * d * (1 << 8)  # + the PQ codebooks
    elif meta.index_type == "faiss.HNSW":
        # the vector, its level and offset, and at most 3M neighbour ids (2M on level 0, M per
        # level above, levels above 0 averaging 1/(M-1)); the JSON does not record M, so the
        # table's largest
        slots = 3 * int(hps.SPECS["_hnsw_m"].high or 256)
        payload = n * (4 * d + 12 + 4 * slots)
    else:
        payload = n * 4 * d
    return payload + SLACK_BYTES


def labels_bytes_limit(meta: ModelMeta) -> int | None:
    """The most bytes the labels file can take: raw float32 or a ``.npy`` of <= 8-byte items."""
    return meta.num_points * NPY_ITEM_MAX + SLACK_BYTES if meta.num_points > 0 else None


def _metric_name(index: Any) -> str:
    return "L2" if index.metric_type == faiss.METRIC_L2 else (
        "inner product" if index.metric_type == faiss.METRIC_INNER_PRODUCT
        else f"metric_type {index.metric_type}")


def check_index(meta: ModelMeta, index: Any, source: str) -> None:
    """The deserialized index is the one the JSON describes: type, metric, d, points."""
    want = FAISS_TYPES[meta.index_type]
    if not isinstance(index, want):
        raise ModelError(f"{source}: the index is a {type(index).__name__}, but index_type "
                         f"is {meta.index_type!r} (faiss {want.__name__})")
    expected = "L2" if meta.index_metric == "L2" else "inner product"
    if _metric_name(index) != expected:
        raise ModelError(f"{source}: the index measures {_metric_name(index)}, but "
                         f"index_metric is {meta.index_metric!r} ({expected})")
    if index.d != meta.index_dim:
        raise ModelError(f"{source}: the index holds {index.d}-dimensional vectors, but "
                         f"index_dim is {meta.index_dim}")
    if not index.is_trained or index.ntotal < 1:
        raise ModelError(f"{source}: the index holds no points (ntotal={index.ntotal}, "
                         f"is_trained={index.is_trained}); retrain the model")
    if meta.num_points and index.ntotal != meta.num_points:
        raise ModelError(f"{source}: the index holds {index.ntotal} points, but num_points "
                         f"is {meta.num_points}")
    _check_ivf(meta, index, source)


def _check_ivf(meta: ModelMeta, index: Any, source: str) -> None:
    nlist, m = meta.faiss_index_ivf_nlists, meta.faiss_index_pq_m
    if isinstance(index, faiss.IndexIVF) and nlist is not None and index.nlist != nlist:
        raise ModelError(f"{source}: the index has {index.nlist} lists, but "
                         f"faiss_index_ivf_nlists is {nlist}")
    if isinstance(index, faiss.IndexIVFPQ) and m is not None and index.pq.M != m:
        raise ModelError(f"{source}: the index has {index.pq.M} sub-quantisers, but "
                         f"faiss_index_pq_m is {m}")


def check_labels(labels: np.ndarray, points: int, source: str) -> np.ndarray:
    """Numeric, finite, one per indexed point; returned as float32."""
    if labels.dtype.kind not in LABEL_KINDS:
        raise ModelError(f"{source}: labels must be numbers, got an array of dtype "
                         f"{labels.dtype}; write one float32 label per point")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)  # an (n, 1) column
    if labels.ndim != 1:
        raise ModelError(f"{source}: labels of shape {labels.shape}; expected one label per "
                         "point (a 1-d array)")
    if labels.shape[0] != points:
        raise ModelError(f"{source}: {labels.shape[0]} labels for {points} indexed points; the "
                         "labels file must hold one float32 per index id")
    out = labels.astype(np.float32)
    bad = first_non_finite(out)
    if bad is not None:
        raise ModelError(f"{source}: label {bad} is {out[bad]}; labels must be finite numbers")
    return out


def npy_labels(data: bytes, source: str) -> np.ndarray:
    """A ``.npy`` array of numbers, its header checked before its data is read."""
    f = io.BytesIO(data)
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(f)
        if version not in readers:
            raise ValueError(f"format version {version} is not read; save with numpy.save")
        shape, _, dtype = readers[version](f)
    except ValueError as exc:
        raise ModelError(f"{source}: not a readable .npy file ({exc})") from None
    if dtype.kind not in LABEL_KINDS or dtype.itemsize > NPY_ITEM_MAX:
        raise ModelError(f"{source}: labels must be numbers (integers or floats of at most "
                         f"{NPY_ITEM_MAX} bytes), got an array of dtype {dtype}; "
                         "write one float32 label per point")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - f.tell():
        raise ModelError(f"{source}: the .npy header declares shape {shape} of {dtype}, but "
                         f"{len(data) - f.tell()} bytes of data follow it")
    return np.frombuffer(data, dtype=dtype, count=count, offset=f.tell()).reshape(shape)


_LIMIT_LOCK = threading.Lock()


def _faiss_limits(size: int) -> dict[str, int]:
    """faiss's deserialization limits (0: none) for ``size`` bytes of index: no vector stored
    in them is longer, and every counted loop (IVF lists, points) costs at least 4 of them."""
    return {"vector_byte": size + SLACK_BYTES, "loop": size // 4 + 1024}


@contextlib.contextmanager
def _lowered(limits: Mapping[str, int]) -> Iterator[None]:
    """faiss's ``deserialization_*_limit`` settings lowered to ``limits`` (where this faiss
    has them, as 1.15 does), restored after; one load at a time changes them."""
    pairs = [(getattr(faiss, f"get_deserialization_{name}_limit", None),
              getattr(faiss, f"set_deserialization_{name}_limit", None), value)
             for name, value in limits.items()]
    with _LIMIT_LOCK:
        saved = [(put, get()) for get, put, _ in pairs if get is not None and put is not None]
        for get, put, value in pairs:
            if get is not None and put is not None:
                before = get()
                put(value if before == 0 else min(before, value))
        try:
            yield
        finally:
            for put, before in saved:
                put(before)


def deserialize_index(data: bytes, source: str) -> Any:
    """``faiss.deserialize_index`` with faiss's allocation limits lowered to what ``data``
    can hold while it runs, so a forged length or list count fails before faiss allocates
    it; any failure is a ``ModelError``."""
    try:
        with _lowered(_faiss_limits(len(data))):
            return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except (RuntimeError, MemoryError) as exc:
        text = str(exc).strip() or type(exc).__name__
        reason = text.splitlines()[-1][-300:]
        raise ModelError(f"{source}: not a faiss index openknn can read ({reason})") from None


def file_limit(name: str, meta: ModelMeta | None) -> int | None:
    """The most bytes model file ``name`` may hold; None where nothing bounds it yet."""
    if name == META_FILE:
        return MAX_META_BYTES
    if meta is None:
        return None
    if name == INDEX_FILE:
        return index_bytes_limit(meta)
    return labels_bytes_limit(meta)


def check_size(name: str, size: int, meta: ModelMeta | None, source: str) -> None:
    limit = file_limit(name, meta)
    if limit is None or size <= limit:
        return
    if meta is None:
        raise ModelError(f"{source}/{name}: {size} bytes, more than the {limit} a model JSON "
                         "may take")
    raise ModelError(
        f"{source}/{name}: {size} bytes, more than the {limit} that a {meta.index_type} model "
        f"of num_points={meta.num_points} and index_dim={meta.index_dim} (its {META_FILE}) "
        "can take; the file is corrupt or belongs to another model")


def check_present(names: Iterable[str], source: str) -> None:
    present = set(names)
    missing = [name for name in MODEL_FILES if name not in present]
    if missing:
        raise ModelError(f"{source}: the model is missing {', '.join(missing)}; expected the "
                         f"files {', '.join(MODEL_FILES)} as written by openknn train")


def read_meta(data: bytes, source: str) -> ModelMeta:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise ModelError(f"{source}: not valid JSON ({exc})") from None
    return ModelMeta.from_json(obj, source)


def read_labels(data: bytes, source: str, points: int | None = None) -> np.ndarray:
    """Raw little-endian float32, or a ``.npy`` array of numbers (also accepted, decision 8);
    with ``points``, checked to be finite and one per indexed point."""
    if data.startswith(NPY_MAGIC):
        labels = npy_labels(data, source)
    elif len(data) % 4:
        raise ModelError(f"{source}: {len(data)} bytes is not a whole number of float32 labels")
    else:
        labels = np.frombuffer(data, dtype="<f4")
    if points is None:
        return labels.astype(np.float32).ravel()
    return check_labels(labels, points, source)
