"""The one table of SageMaker k-NN hyperparameters: names, types, ranges, defaults, docs,
and the parser for the all-strings ``hyperparameters.json`` and ``--hp name=value``."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import HyperparameterError

INDEX_TYPES = ("faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ", "faiss.HNSW")
INDEX_METRICS = ("L2", "INNER_PRODUCT", "COSINE")
PREDICTOR_TYPES = ("classifier", "regressor")
REDUCTION_TYPES = ("sign", "fjlt")
PQ_M_VALUES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
MAX_K = 1024


@dataclass(frozen=True)
class Spec:
    """One hyperparameter: how to parse it, what is allowed, and its documentation."""

    name: str
    kind: str  # "int", "str", "int_or_auto", "float"
    doc: str
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    low: float | None = None  # lower bound, exclusive unless low_closed
    high: float | None = None  # inclusive upper bound
    low_closed: bool = False

    def allowed(self) -> str:
        """The allowed values in the notation of the messages and the docs."""
        if self.choices is not None:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        low = "-inf" if self.low is None else _num(self.low)
        high = "inf" if self.high is None else _num(self.high)
        interval = (f"{'[' if self.low_closed else '('}{low}, "
                    f"{high}{']' if self.high is not None else ')'}")
        return f"'auto' or an integer in {interval}" if self.kind == "int_or_auto" else interval


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


TABLE: tuple[Spec, ...] = (
    Spec("feature_dim", "int", "Number of features in the input data.", required=True, low=0),
    Spec("k", "int", "Number of nearest neighbours.", required=True, low=0, high=MAX_K),
    Spec("predictor_type", "str", "Majority vote (classifier) or mean label (regressor).",
         required=True, choices=PREDICTOR_TYPES),
    Spec("sample_size", "int", "Total number of training points kept in the index "
         "(reservoir-sampled; split over the training hosts).", required=True, low=0),
    Spec("dimension_reduction_type", "str", "Random projection applied before indexing; "
         "unset (or 'none') for no reduction.", choices=("none",) + REDUCTION_TYPES),
    Spec("dimension_reduction_target", "int", "Target dimension; required when, and only when, "
         "dimension_reduction_type is set; less than feature_dim.", low=0),
    Spec("index_type", "str", "faiss index: exact (Flat), inverted file (IVFFlat), inverted "
         "file with product quantisation (IVFPQ), or a graph (HNSW, openknn's addition).",
         default="faiss.Flat", choices=INDEX_TYPES),
    Spec("index_metric", "str", "Distance: Euclidean, inner product, or cosine (normalised "
         "inner product).", default="L2", choices=INDEX_METRICS),
    Spec("faiss_index_ivf_nlists", "int_or_auto", "Number of IVF cells; 'auto' = "
         "round(sqrt(points sampled)). IVF index types only.", default="auto", low=0),
    Spec("faiss_index_pq_m", "int", "PQ sub-quantisers (bytes per vector); data is zero-padded "
         "to a multiple of it. faiss.IVFPQ only; default: the largest allowed value <= d/4.",
         choices=PQ_M_VALUES),
    Spec("mini_batch_size", "int", "Records per read batch for the train and test channels; "
         "does not change the model.", default=5000, low=0),
    Spec("epochs", "int", "Passes over the data; k-NN reads its data once, so only 1.",
         default=1, choices=(1,)),
    Spec("_faiss_index_nprobe", "int", "IVF cells visited per query at search time.",
         default=5, low=0),
    Spec("_hnsw_m", "int", "HNSW: neighbours per node in the graph (faiss.HNSW only).",
         default=32, low=2, high=256, low_closed=True),
    Spec("_hnsw_ef_construction", "int", "HNSW: candidate list size while building.",
         default=40, low=1, high=4096, low_closed=True),
    Spec("_hnsw_ef_search", "int", "HNSW: candidate list size at search time (at least k is "
         "used).", default=64, low=1, high=4096, low_closed=True),
    Spec("_target_recall", "float", "Tune the search-time knob (nprobe for IVF, efSearch for "
         "HNSW) to the smallest value whose recall@k on a held-out slice of the sample "
         "reaches this; unset: no tuning.", low=0, high=1),
    Spec("_num_gpus", "int_or_auto", "GPUs for building the index and scoring the test "
         "channel (faiss's GPU build; Flat / IVFFlat / IVFPQ): 'auto' uses one where faiss "
         "sees one, 0 none; k-NN uses a single GPU.", default="auto", low=0, low_closed=True),
    Spec("_seed", "int", "Seed of the reservoir sampler and the projection; a fixed seed "
         "gives bit-identical models.", default=0, low=0, low_closed=True),
)
SPECS: dict[str, Spec] = {s.name: s for s in TABLE}


def _parse_int(text: str) -> int:
    value = float(text)  # SageMaker tuners send "10.0"; accept integral floats only
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def _parse_value(spec: Spec, raw: object) -> Any:
    text = str(raw).strip()
    try:
        if spec.kind == "str":
            return text
        if spec.kind == "int_or_auto" and text == "auto":
            return "auto"
        if spec.kind == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        return _parse_int(text)
    except ValueError:
        kind = "a number" if spec.kind == "float" else "an integer"
        raise HyperparameterError(
            f"Hyperparameter {spec.name}: could not parse value {text!r}; "
            f"expected {kind} in {spec.allowed()}"
        ) from None


def _check_range(spec: Spec, value: Any) -> None:
    if value == "auto" and spec.kind == "int_or_auto":
        return
    if spec.choices is not None:
        ok = value in spec.choices
    else:
        above = spec.low is None or value > spec.low or (spec.low_closed and value == spec.low)
        ok = above and (spec.high is None or value <= spec.high)
    if not ok:
        shown = repr(value) if isinstance(value, str) else value
        raise HyperparameterError(
            f"Hyperparameter {spec.name}: {shown} is not in {spec.allowed()}"
        )


def _unknown(name: str) -> HyperparameterError:
    close = difflib.get_close_matches(name, SPECS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return HyperparameterError(
        f"Extraneous hyperparameter found: {name}{hint}. Known hyperparameters: "
        f"{', '.join(s.name for s in TABLE if not s.name.startswith('_'))}; names starting "
        "with '_' are accepted as internal settings"
    )


Rule = Callable[[dict[str, Any]], None]


def _rule_required(hp: dict[str, Any]) -> None:
    missing = [s.name for s in TABLE if s.required and hp.get(s.name) is None]
    if missing:
        names = ", ".join(repr(m) for m in missing)
        raise HyperparameterError(
            f"No value(s) were specified for {names} which are required hyperparameter(s); "
            "set them, e.g. --hp feature_dim=54 --hp k=10 --hp sample_size=200000 "
            "--hp predictor_type=classifier"
        )


def _rule_reduction(hp: dict[str, Any]) -> None:
    if hp.get("dimension_reduction_type") == "none":
        hp["dimension_reduction_type"] = None
    rtype, target = hp.get("dimension_reduction_type"), hp.get("dimension_reduction_target")
    if rtype is not None and target is None:
        raise HyperparameterError(
            '"dimension_reduction_target" is required when "dimension_reduction_type" is set '
            f"(dimension_reduction_type={rtype!r}); set it to an integer less than feature_dim"
        )
    if rtype is None and target is not None:
        raise HyperparameterError(
            "Hyperparameter 'dimension_reduction_target' should only be set when "
            f"'dimension_reduction_type' is set (got dimension_reduction_target={target}); "
            f"set dimension_reduction_type to one of {{{', '.join(REDUCTION_TYPES)}}} or drop it"
        )
    if target is not None and target >= hp["feature_dim"]:
        raise HyperparameterError(
            "Hyperparameter 'dimension_reduction_target' should be less than 'feature_dim' "
            f"(got dimension_reduction_target={target}, feature_dim={hp['feature_dim']})"
        )


def _rule_pq(hp: dict[str, Any]) -> None:
    if hp.get("faiss_index_pq_m") is not None and hp["index_type"] != "faiss.IVFPQ":
        raise HyperparameterError(
            "Hyperparameter 'faiss_index_pq_m' should only be set when 'index_type' = "
            f"'faiss.IVFPQ' (got index_type={hp['index_type']!r}, "
            f"faiss_index_pq_m={hp['faiss_index_pq_m']}); drop it or set "
            "index_type=faiss.IVFPQ"
        )


def _rule_hnsw(hp: dict[str, Any]) -> None:
    given = [n for n in ("_hnsw_m", "_hnsw_ef_construction", "_hnsw_ef_search")
             if hp.get(n) != SPECS[n].default]
    if given and hp["index_type"] != "faiss.HNSW":
        raise HyperparameterError(
            f"Hyperparameter(s) {', '.join(given)} apply only when 'index_type' = 'faiss.HNSW' "
            f"(got index_type={hp['index_type']!r}); drop them or set index_type=faiss.HNSW")


RULES: tuple[Rule, ...] = (_rule_required, _rule_reduction, _rule_pq, _rule_hnsw)


def parse(raw: Mapping[str, object], rules: Iterable[Rule] = RULES) -> dict[str, Any]:
    """Parse and validate a mapping of hyperparameters (all values may be strings).

    Returns every name of the table, with defaults filled in; ignored underscore keys are dropped.
    """
    hp: dict[str, Any] = {s.name: s.default for s in TABLE}
    for name, value in raw.items():
        spec = SPECS.get(name)
        if spec is None:
            if name.startswith("_"):
                continue  # internal keys (decision 9)
            raise _unknown(name)
        if value is None:
            continue
        parsed = _parse_value(spec, value)
        _check_range(spec, parsed)
        hp[name] = parsed
    for rule in rules:
        rule(hp)
    return hp


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """Parse ``name=value`` strings from the command line into a mapping."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise HyperparameterError(
                f"Hyperparameter option {item!r} is not of the form name=value; "
                "write it like --hp k=10"
            )
        out[name.strip()] = value.strip()
    return out


def to_strings(hp: Mapping[str, Any]) -> dict[str, str]:
    """The all-strings form SageMaker writes to ``hyperparameters.json`` (None values dropped)."""
    return {k: str(v) for k, v in hp.items() if v is not None}


def markdown() -> str:
    """``docs/hyperparameters.md``, generated from the table."""
    lines = [
        "# Hyperparameters",
        "",
        "Generated from `src/openknn/core/hyperparameters.py` by "
        "`openknn hyperparameters --markdown`; do not edit by hand.",
        "",
        "All values may be given as strings (as in SageMaker's `hyperparameters.json`). "
        "Names starting with `_` are internal: the ones below are honoured, any other is "
        "accepted and ignored. Any other unknown name fails the job with "
        "`Extraneous hyperparameter found: <name>`.",
        "",
        "| name | required | type | allowed values | default | description |",
        "|---|---|---|---|---|---|",
    ]
    for s in TABLE:
        kind = {"int": "integer", "str": "string", "int_or_auto": "'auto' or integer",
                "float": "number"}[s.kind]
        default = "—" if s.default is None else f"`{s.default}`"
        required = "yes" if s.required else "no"
        lines.append(f"| `{s.name}` | {required} | {kind} | {s.allowed()} | {default} | {s.doc} |")
    lines += [
        "",
        "Rules across parameters:",
        "",
        "- `dimension_reduction_target` is required when `dimension_reduction_type` is set, "
        "forbidden otherwise, and must be less than `feature_dim`.",
        "- `faiss_index_pq_m` is allowed only with `index_type=faiss.IVFPQ`. The index "
        "dimension is padded up to a multiple of it (54 features with m=8 → 56).",
        "- `k` must not exceed the number of points sampled, and IVF indexes need at least "
        "`nlist` points (IVFPQ also at least 256); otherwise training fails with a "
        "`ClientError` naming the minimum.",
        "- `_num_gpus` set to a count fails at once with `faiss.HNSW` (faiss has no GPU "
        "HNSW), with faiss's CPU build, or where faiss sees no GPU; `auto` uses the CPU in "
        "each of these cases (see docs/gpu.md).",
        "",
    ]
    return "\n".join(lines)
