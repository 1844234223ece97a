"""The hyperparameter table: parsing, every rule, the message texts, and the generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from openknn.core import hyperparameters as hp
from openknn.errors import ClientError, HyperparameterError

BASE = {"feature_dim": "54", "k": "10", "sample_size": "200000", "predictor_type": "classifier"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "hyperparameters.md"


def parse(**extra: object) -> dict[str, object]:
    return hp.parse({**BASE, **{k: v for k, v in extra.items()}})


def test_strings_are_parsed_and_defaults_filled() -> None:
    out = parse()
    assert out["feature_dim"] == 54 and out["k"] == 10 and out["sample_size"] == 200000
    assert out["index_type"] == "faiss.Flat" and out["index_metric"] == "L2"
    assert out["faiss_index_ivf_nlists"] == "auto" and out["mini_batch_size"] == 5000
    assert out["_faiss_index_nprobe"] == 5 and out["_seed"] == 0
    assert out["dimension_reduction_type"] is None


def test_integral_floats_from_tuners_are_accepted() -> None:
    assert parse(k="10.0")["k"] == 10


def test_missing_required_names_every_missing_one() -> None:
    with pytest.raises(HyperparameterError, match=r"No value\(s\) were specified for 'k', "
                       r"'sample_size' which are required hyperparameter\(s\)"):
        hp.parse({"feature_dim": "54", "predictor_type": "classifier"})


def test_unknown_name_is_extraneous_with_suggestion() -> None:
    with pytest.raises(HyperparameterError, match=r"Extraneous hyperparameter found: "
                       r"sample_sise \(did you mean 'sample_size'\?\)"):
        parse(sample_sise="5")


def test_underscore_names_are_accepted() -> None:
    out = parse(_kvstore="dist_async", _tuning_objective_metric="test:accuracy", _foo="bar")
    assert "_foo" not in out and "_kvstore" not in out


@pytest.mark.parametrize(
    ("name", "value", "pattern"),
    [
        ("k", "0", r"Hyperparameter k: 0 is not in \(0, 1024\]"),
        ("k", "1025", r"Hyperparameter k: 1025 is not in \(0, 1024\]"),
        ("k", "ten", r"Hyperparameter k: could not parse value 'ten'; expected an integer"),
        ("k", "2.5", r"could not parse value '2.5'"),
        ("sample_size", "-3", r"Hyperparameter sample_size: -3 is not in \(0, inf\)"),
        ("feature_dim", "0", r"Hyperparameter feature_dim: 0 is not in \(0, inf\)"),
        ("predictor_type", "classify",
         r"Hyperparameter predictor_type: 'classify' is not in \{classifier, regressor\}"),
        ("index_type", "faiss.LSH",
         r"Hyperparameter index_type: 'faiss.LSH' is not in "
         r"\{faiss.Flat, faiss.IVFFlat, faiss.IVFPQ, faiss.HNSW\}"),
        ("_target_recall", "0", r"_target_recall: 0.0 is not in \(0, 1\]"),
        ("_target_recall", "1.5", r"_target_recall: 1.5 is not in \(0, 1\]"),
        ("_target_recall", "high", r"could not parse value 'high'; expected a number"),
        ("_hnsw_m", "1", r"_hnsw_m: 1 is not in \[2, 256\]"),
        ("_hnsw_ef_construction", "0", r"_hnsw_ef_construction: 0 is not in \[1, 4096\]"),
        ("index_metric", "l1", r"index_metric: 'l1' is not in \{L2, INNER_PRODUCT, COSINE\}"),
        ("faiss_index_ivf_nlists", "0", r"faiss_index_ivf_nlists: 0 is not in 'auto' or an "
         r"integer in \(0, inf\)"),
        ("faiss_index_ivf_nlists", "many", r"could not parse value 'many'"),
        ("mini_batch_size", "0", r"mini_batch_size: 0 is not in \(0, inf\)"),
        ("dimension_reduction_type", "pca", r"'pca' is not in \{none, sign, fjlt\}"),
        ("epochs", "3", r"Hyperparameter epochs: 3 is not in \{1\}"),
        ("_faiss_index_nprobe", "0", r"_faiss_index_nprobe: 0 is not in \(0, inf\)"),
    ],
)
def test_out_of_range_values_name_parameter_allowed_and_given(
        name: str, value: str, pattern: str) -> None:
    with pytest.raises(HyperparameterError, match=pattern):
        parse(**{name: value})


def test_pq_m_must_be_an_allowed_value() -> None:
    with pytest.raises(HyperparameterError, match=r"faiss_index_pq_m: 5 is not in \{1, 2, 3, 4, 8"):
        parse(index_type="faiss.IVFPQ", faiss_index_pq_m="5")


def test_pq_m_without_ivfpq_is_refused() -> None:
    with pytest.raises(HyperparameterError, match=r"'faiss_index_pq_m' should only be set when "
                       r"'index_type' = 'faiss.IVFPQ' \(got index_type='faiss.Flat'"):
        parse(faiss_index_pq_m="8")
    assert parse(index_type="faiss.IVFPQ", faiss_index_pq_m="8")["faiss_index_pq_m"] == 8


def test_reduction_target_rules() -> None:
    with pytest.raises(HyperparameterError, match='"dimension_reduction_target" is required'):
        parse(dimension_reduction_type="sign")
    with pytest.raises(HyperparameterError, match="should only be set when "
                       "'dimension_reduction_type' is set"):
        parse(dimension_reduction_target="10")
    with pytest.raises(HyperparameterError, match=r"should be less than 'feature_dim' \(got "
                       r"dimension_reduction_target=54, feature_dim=54\)"):
        parse(dimension_reduction_type="fjlt", dimension_reduction_target="54")
    out = parse(dimension_reduction_type="sign", dimension_reduction_target="20")
    assert out["dimension_reduction_target"] == 20
    assert parse(dimension_reduction_type="none")["dimension_reduction_type"] is None


def test_errors_are_client_errors_and_value_errors() -> None:
    with pytest.raises(ClientError) as info:
        parse(k="0")
    assert isinstance(info.value, ValueError)
    assert info.value.failure_reason().startswith("ClientError: Hyperparameter k:")


def test_assignments() -> None:
    assert hp.parse_assignments(["k=10", " feature_dim = 54 "]) == {"k": "10",
                                                                   "feature_dim": "54"}
    with pytest.raises(HyperparameterError, match=r"'k10' is not of the form name=value"):
        hp.parse_assignments(["k10"])


def test_to_strings_round_trips() -> None:
    out = parse(index_type="faiss.IVFFlat")
    assert hp.parse(hp.to_strings(out)) == out


def test_docs_are_generated_from_the_table() -> None:
    assert DOCS.read_text() == hp.markdown(), (
        "docs/hyperparameters.md is stale: run `openknn hyperparameters --markdown "
        "> docs/hyperparameters.md`")
    for spec in hp.TABLE:
        assert f"`{spec.name}`" in DOCS.read_text()


def test_hnsw_parameters_need_hnsw() -> None:
    with pytest.raises(HyperparameterError, match=r"_hnsw_m apply only when 'index_type' = "
                       r"'faiss.HNSW' \(got index_type='faiss.Flat'\)"):
        parse(_hnsw_m="16")
    assert parse(index_type="faiss.HNSW", _hnsw_m="16")["_hnsw_m"] == 16
