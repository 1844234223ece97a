"""openknn bench's written side (bench/output.py): numbers as text, the Markdown and text
tables, the tables of a small hand-built run, and ``write()``'s report.md and real PNG plots.
No server, no network, no real data: tiny real faiss models stand in for the trained ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from openknn.bench import output
from openknn.bench.config import BenchConfig, Covtype, Fashion, ModelSpec, Trained
from openknn.bench.measure import (
    NO_GPU,
    Baseline,
    BenchResult,
    CovtypeReport,
    CovtypeResult,
    CurvePoint,
    FashionBaseline,
    FashionReport,
    FashionResult,
    Latency,
    Pass,
)
from openknn.bench.output import NA, both, md_table, num, pct, text_table
from openknn.core import hyperparameters
from openknn.jobs import training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------- numbers as text


def test_num_groups_thousands_and_rounds() -> None:
    assert num(1234.5678) == "1,234.6"
    assert num(1234.5678, 0) == "1,235"
    assert num(0.98765, 4) == "0.9877"
    assert num(-2.25, 1) == "-2.2"  # round half to even, as format does
    assert num(3) == "3.0"


@pytest.mark.parametrize("missing", [None, float("nan"), float("inf"), float("-inf")])
def test_num_and_pct_write_missing_values_as_na(missing: float | None) -> None:
    assert num(missing) == NA == "n/a"
    assert pct(missing) == NA


def test_pct_is_a_share_as_percent() -> None:
    assert pct(0.9512) == "95.1"
    assert pct(1.0) == "100.0"
    assert pct(0.0) == "0.0"


def test_both_joins_two_paths() -> None:
    assert both("1.00", NA) == "1.00 / n/a"


def test_md_table_fills_empty_cells_and_ends_with_a_blank_line() -> None:
    lines = md_table(["a", "b"], [["1", ""], [" x ", "  "]])
    assert lines == ["| a | b |", "|---|---|", "| 1 | n/a |", "| x | n/a |", ""]
    assert md_table(["only"], []) == ["| only |", "|---|", ""]


def test_text_table_pads_columns_first_left_rest_right() -> None:
    lines = text_table(["model", "n"], [["flat", "12,345"], ["hnsw_l2_large", "7"]])
    assert lines == ["model         |      n",
                     "--------------+-------",
                     "flat          | 12,345",
                     "hnsw_l2_large |      7"]
    assert len({len(line) for line in lines}) == 1


# ---------------------------------------------------------------- a small hand-built run

RNG = np.random.default_rng(5)
X = RNG.standard_normal((400, 4)).astype(np.float32)
Y = RNG.integers(0, 3, 400).astype(np.float32)


def trained(name: str, index_type: str, **extra: str) -> Trained:
    hp = hyperparameters.parse({"feature_dim": "4", "k": "100", "sample_size": "500",
                                "predictor_type": "classifier", "index_type": index_type,
                                **extra})
    model = training.build_model(X, Y, hp)
    return Trained(ModelSpec(name, index_type, 500, extra), model, Path(f"{name}.tar.gz"),
                   1.234, 123_456, job_accuracy=0.9)


def lat(batch: float, rows: int = 581) -> Latency:
    return Latency(batch, batch / 10, batch / 5, batch / 2, rows)


ACC = [0.9 + i / 1000 for i in range(12)]


@pytest.fixture(scope="module")
def models() -> dict[str, Trained]:
    return {"flat": trained("flat_l2", "faiss.Flat"),
            "ivfpq": trained("ivfpq_l2", "faiss.IVFPQ", faiss_index_pq_m="2"),
            "hnsw": trained("hnsw_l2", "faiss.HNSW", _target_recall="0.9")}


@pytest.fixture(scope="module")
def covtype(models: dict[str, Trained]) -> CovtypeReport:
    data = Covtype("hand-built", X, Y, X[:50], Y[:50], X, notes=["a covtype note"])
    ivfpq = models["ivfpq"]
    ivfpq = Trained(ivfpq.spec, ivfpq.model, ivfpq.tar, 0.5, 2048, job_accuracy=None)
    results = [CovtypeResult(models["flat"], ACC, True, lat(100.0), lat(10.0), NO_GPU, 1.0),
               CovtypeResult(ivfpq, [a - 0.1 for a in ACC], False, lat(50.0), lat(4.0),
                             "faiss has no GPU x index", None, lat(20.0))]
    base = Baseline("scikit-learn brute (flat_l2 sample)", 400, Y, np.zeros((50, 12)), ACC,
                    lat(300.0), 0.01, X.nbytes)
    return CovtypeReport(data, results, [base])


@pytest.fixture(scope="module")
def fashion(models: dict[str, Trained]) -> FashionReport:
    data = Fashion("hand-built", X, Y, X[:20], Y[:20], np.zeros((20, 10), np.int64),
                   notes=["a fashion note"])
    flat = FashionResult(models["flat"], Pass(1.0, 5000.0, 0.8), Pass(1.0, 9000.0, 0.8),
                         NO_GPU, None, [])
    curve = [CurvePoint(v, Pass(0.8 + v / 1000, 4000.0 / v, 0.7),
                        Pass(0.8 + v / 1000, 8000.0 / v, 0.7)) for v in (8, 16, 32)]
    hnsw = FashionResult(models["hnsw"], curve[1].endpoint, curve[1].raw, "no GPU HNSW",
                         "efSearch", curve)
    return FashionReport(data, [flat, hnsw], FashionBaseline(Pass(1.0, 300.0, 0.79), 0.02,
                                                              X.nbytes))


def result(covtype: CovtypeReport | str, fashion: FashionReport | str) -> BenchResult:
    return BenchResult(BenchConfig.make(True, 2), "openknn bench --quick --output o",
                       covtype, fashion, 12.3, "0.50 / 0.70")


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def rows_of(lines: list[str]) -> list[list[str]]:
    return [cells(line) for line in lines[2:] if line]


def test_covtype_models_table(covtype: CovtypeReport, models: dict[str, Trained]) -> None:
    lines = output.covtype_models_table(covtype)
    header = cells(lines[0])
    assert header[0] == "model" and "job test accuracy % (k=100)" in header
    rows = rows_of(lines)
    assert [r[0] for r in rows] == ["flat_l2", "ivfpq_l2", "scikit-learn brute (flat_l2 sample)"]
    assert all(len(r) == len(header) for r in rows)
    flat, ivfpq, base = rows
    n = models["flat"].model.meta.num_points
    assert flat[1:4] == ["faiss.Flat", f"500 → {n:,}", "none"]
    assert flat[5:] == ["exact", "1.0000", "123,456", "1.23", "90.0", "yes"]
    meta = models["ivfpq"].model.meta
    assert ivfpq[3:6] == [str(meta.faiss_index_ivf_nlists), "2", f"nprobe={meta.nprobe}"]
    assert ivfpq[6] == NA and ivfpq[9] == NA and ivfpq[10] == "NO"  # no recall, no score
    assert base[1:3] == ["brute force", "400"] and base[7] == f"{X.nbytes:,}"


def test_covtype_accuracy_table_has_one_column_per_k(covtype: CovtypeReport) -> None:
    lines = output.covtype_accuracy_table(covtype, 12)
    assert cells(lines[0]) == ["model", "answered by", *[f"k={k}" for k in range(1, 13)]]
    rows = rows_of(lines)
    assert rows[0][2:] == [f"{100 * a:.1f}" for a in ACC]
    assert rows[1][2] == "80.0" and rows[2][1] == "scikit-learn"


def test_covtype_latency_table_says_why_a_gpu_row_is_missing(covtype: CovtypeReport) -> None:
    lines = output.covtype_latency_table(covtype)
    assert "batch 581 rows ms" in lines[0] and "queries/s @581" in lines[0]
    rows = {(r[0], r[1]): r[2:] for r in rows_of(lines)}
    assert len(rows) == 2 * 4 + 1
    assert rows[("flat_l2", "endpoint (HTTP, loopback)")] == ["100.00", "10.00", "20.00",
                                                             "50.00", "5,810"]
    assert rows[("flat_l2", "raw faiss, GPU")] == [NO_GPU, NA, NA, NA, NA]
    assert rows[("flat_l2", "endpoint on GPU (HTTP, loopback)")] == [NO_GPU, NA, NA, NA, NA]
    assert rows[("ivfpq_l2", "raw faiss, GPU")][0] == "faiss has no GPU x index"
    assert rows[("ivfpq_l2", "endpoint on GPU (HTTP, loopback)")][0] == "20.00"
    assert rows[("scikit-learn brute (flat_l2 sample)", "scikit-learn predict")][4] == "1,937"


def test_fashion_tables(fashion: FashionReport, models: dict[str, Trained]) -> None:
    rows = rows_of(output.fashion_table(fashion))
    assert len(rows) == 2 * 3 + 1
    assert rows[0][:6] == ["flat_l2", "endpoint (HTTP, loopback)", "exact", "1.0000", "5,000",
                           "80.0"]
    knob = models["hnsw"].knob
    assert knob.startswith("efSearch=") and knob.endswith(" (tuned)")
    assert rows[5][:4] == ["hnsw_l2", "raw faiss, GPU", knob, "no GPU HNSW"]
    assert rows[5][4:6] == [NA, NA]
    assert rows[-1][:3] == ["scikit-learn brute", "KNeighborsClassifier.kneighbors", "exact"]
    curve = rows_of(output.curve_table(fashion))
    assert [r[1] for r in curve] == ["efSearch=8", "efSearch=16", "efSearch=32"]
    assert curve[0][2:] == ["0.8080", "500", "0.8080", "1,000"]


def test_summary_prints_both_sections(covtype: CovtypeReport, fashion: FashionReport) -> None:
    text = output.summary(result(covtype, fashion))
    assert text.startswith("openknn bench summary (quick run, 12 s, 2 threads, load average "
                           "at start / end 0.50 / 0.70)")
    assert "covtype (50 test rows)" in text and "Fashion-MNIST (400 base, 20 queries)" in text
    assert re.search(r"^flat_l2 +\| +400 \| +90\.0 \| +90\.4 \| +90\.9 \| +1\.0000 \| +"
                     r"100\.00 / 10\.00 \| +50\.00 / 5\.00 \| +0\.12 \| +1\.23$", text, re.M), text
    assert re.search(r"^ivfpq_l2 .*\| +n/a \|", text, re.M)
    assert "scikit-learn brute (flat_l2 sample)" in text and "(sklearn)" in text
    skipped = output.summary(result("no data here", "no images"))
    assert "covtype skipped: no data here" in skipped
    assert "Fashion-MNIST skipped: no images" in skipped


def check_png(path: Path) -> np.ndarray:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.std() > 0.01  # not a blank canvas
    return image


def markdown_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(cells(line))
        elif current:
            tables.append(current)
            current = []
    return tables


def test_write_makes_report_md_and_real_pngs(tmp_path: Path, covtype: CovtypeReport,
                                             fashion: FashionReport) -> None:
    pytest.importorskip("matplotlib")
    text = output.write(result(covtype, fashion), tmp_path)
    assert text.endswith(f"\n\nreport: {tmp_path / 'report.md'}")
    assert text.startswith("openknn bench summary")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["report.md", output.ACCURACY_PNG, output.LATENCY_PNG, output.CURVES_PNG])
    for name in (output.ACCURACY_PNG, output.LATENCY_PNG, output.CURVES_PNG):
        check_png(tmp_path / name)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# openknn bench report\n")
    assert "- command: `openknn bench --quick --output o`" in report
    assert "- run time: 12 s" in report and "0.50 / 0.70" in report
    assert "- a covtype note" in report and "- a fashion note" in report
    assert "- mode: quick (subsampled); 10 batch requests of 581 rows" in report
    for name in (output.ACCURACY_PNG, output.LATENCY_PNG, output.CURVES_PNG):
        assert f"]({name})" in report
    assert "Skipped" not in report
    tables = markdown_tables(report)
    assert len(tables) == 6  # models, accuracy, latency, published; fashion, curve
    for table in tables:
        assert all(len(row) == len(table[0]) for row in table), table[0]
        assert all(cell for row in table for cell in row), table[0]  # n/a, never blank
    assert any(NA in row for table in tables for row in table)
    assert not re.search(r"\bnan\b", report, re.I)
    assert [row[0] for row in tables[3][2:]] == [row[0] for row in output.PUBLISHED]


def test_write_with_both_sections_skipped(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    text = output.write(result("no covtype data (offline)", "no Fashion-MNIST"), tmp_path)
    assert "covtype skipped: no covtype data (offline)" in text
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Skipped: no covtype data (offline)." in report
    assert "Skipped: no Fashion-MNIST." in report
    assert f"]({output.CURVES_PNG})" in report  # the message plot is still linked
    for name in (output.ACCURACY_PNG, output.LATENCY_PNG, output.CURVES_PNG):
        check_png(tmp_path / name)


def test_machine_names_the_libraries_and_threads() -> None:
    import faiss

    line = output.machine(3)
    assert "(3 faiss threads for the server and for raw faiss)" in line
    assert f"faiss {faiss.__version__}" in line and f"numpy {np.__version__}" in line
    assert output._version("surely-not-a-distribution-name") == "not installed"
