"""openknn bench's configuration and inputs (bench/config.py, bench/run.py): the quick and
full sizes, --threads, the tutorial's Part 2 model set, a trained model's search knob, and
the data paths checked before any minute of work. No network, no real data, no server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from openknn.bench import config, run
from openknn.bench.config import BenchConfig, ModelSpec, Trained
from openknn.core import hyperparameters
from openknn.errors import ChannelError, ClientError, DataError
from openknn.jobs import datasets, training

# ---------------------------------------------------------------- BenchConfig.make


def test_full_run_keeps_the_tutorial_sizes() -> None:
    cfg = BenchConfig.make(quick=False, threads=3)
    assert cfg == BenchConfig(threads=3)  # nothing but the threads differs from the defaults
    assert not cfg.quick
    assert cfg.sample_sizes == (200_000, 500_000)  # the tutorial's two Part 2 models
    assert cfg.covtype_k == 100 and cfg.max_k == 12 and cfg.fashion_k == 10
    assert cfg.batch_rows == 581 and cfg.batch_requests == 100
    assert cfg.covtype_test_rows is None and cfg.fashion_base is None  # every row
    assert cfg.fashion_queries is None and cfg.target_recall == 0.95


def test_quick_run_is_smaller_in_every_size_it_changes() -> None:
    full, quick = BenchConfig.make(False, 2), BenchConfig.make(True, 2)
    assert quick.quick and quick.threads == 2
    assert quick.sample_sizes == (20_000, 50_000)
    assert quick.covtype_test_rows == 300 and quick.fashion_base == 10_000
    assert quick.fashion_queries == 500
    for name in ("batch_requests", "single_requests", "sklearn_batches", "sklearn_single"):
        assert getattr(quick, name) < getattr(full, name), name
    assert set(quick.nprobe_curve) < set(full.nprobe_curve)
    assert set(quick.ef_curve) < set(full.ef_curve)
    # what a quick run measures stays the same: the k values, the batch, the target
    for name in ("covtype_k", "max_k", "batch_rows", "fashion_k", "target_recall"):
        assert getattr(quick, name) == getattr(full, name), name


def test_curves_are_increasing() -> None:
    for cfg in (BenchConfig.make(False, 1), BenchConfig.make(True, 1)):
        for curve in (cfg.nprobe_curve, cfg.ef_curve):
            assert list(curve) == sorted(set(curve)) and curve[0] >= 1


def test_threads_default_to_every_cpu_this_process_may_use(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "all_cpus", lambda: 7)
    assert BenchConfig.make(quick=True).threads == 7
    assert BenchConfig.make(quick=False, threads=None).threads == 7
    assert BenchConfig.make(quick=True, threads=1).threads == 1


def test_all_cpus_follows_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert config.all_cpus() == 3
    monkeypatch.delattr(config.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(config.os, "cpu_count", lambda: None)
    assert config.all_cpus() == 1


@pytest.mark.parametrize("threads", [0, -1, -8])
def test_threads_below_one_are_a_client_error(threads: int) -> None:
    with pytest.raises(ClientError) as err:
        BenchConfig.make(quick=True, threads=threads)
    assert str(err.value) == f"--threads {threads}: give 1 or more faiss threads"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        BenchConfig().threads = 4  # type: ignore[misc]


# ---------------------------------------------------------------- the model set


def test_covtype_specs_are_part_2_then_the_tuned_pair() -> None:
    cfg = BenchConfig(sample_sizes=(111, 222), target_recall=0.93)
    specs = config.covtype_specs(cfg)
    assert [(s.name, s.index_type, s.sample_size) for s in specs] == [
        ("flat_l2", "faiss.Flat", 111), ("ivfpq_l2", "faiss.IVFPQ", 111),
        ("flat_l2_large", "faiss.Flat", 222), ("ivfpq_l2_large", "faiss.IVFPQ", 222),
        ("ivfflat_l2_large", "faiss.IVFFlat", 222), ("hnsw_l2_large", "faiss.HNSW", 222)]
    extras = {s.name: dict(s.extra) for s in specs}
    assert extras["flat_l2"] == extras["flat_l2_large"] == {}
    assert extras["ivfpq_l2"] == extras["ivfpq_l2_large"] == {"faiss_index_pq_m": "8"}
    assert extras["ivfflat_l2_large"] == extras["hnsw_l2_large"] == {"_target_recall": "0.93"}


def test_covtype_specs_follow_the_run_sizes() -> None:
    for quick in (False, True):
        cfg = BenchConfig.make(quick, 1)
        sizes = [s.sample_size for s in config.covtype_specs(cfg)]
        assert sizes == [cfg.sample_sizes[0]] * 2 + [cfg.sample_sizes[1]] * 4
        assert len({s.name for s in config.covtype_specs(cfg)}) == 6


def test_fashion_specs_index_every_base_row() -> None:
    cfg = BenchConfig.make(True, 1)
    specs = config.fashion_specs(cfg, 1234)
    assert [(s.name, s.index_type, s.sample_size) for s in specs] == [
        ("flat_l2", "faiss.Flat", 1234), ("ivfflat_l2", "faiss.IVFFlat", 1234),
        ("hnsw_l2", "faiss.HNSW", 1234)]
    assert [dict(s.extra) for s in specs] == [{}, {"_target_recall": "0.95"},
                                              {"_target_recall": "0.95"}]


def test_every_spec_is_a_valid_training_job() -> None:
    """The hyperparameters the run builds from each spec pass the real parser."""
    cfg = BenchConfig.make(False, 1)
    for spec in [*config.covtype_specs(cfg), *config.fashion_specs(cfg, 60_000)]:
        hp = hyperparameters.parse(run.base_hp(spec, 54, cfg.covtype_k))
        assert hp["index_type"] == spec.index_type and hp["sample_size"] == spec.sample_size
        assert hp["k"] == 100 and hp["_num_gpus"] == 0 and hp["feature_dim"] == 54
        tuned = spec.extra.get("_target_recall")
        assert hp["_target_recall"] == (None if tuned is None else float(tuned))


def test_base_hp_lets_the_spec_add_but_keeps_the_cpu() -> None:
    spec = ModelSpec("x", "faiss.IVFPQ", 10, {"faiss_index_pq_m": "4"})
    assert run.base_hp(spec, 5, 3) == {
        "feature_dim": "5", "k": "3", "predictor_type": "classifier", "sample_size": "10",
        "index_type": "faiss.IVFPQ", "_num_gpus": "0", "faiss_index_pq_m": "4"}


# ---------------------------------------------------------------- Trained.knob

RNG = np.random.default_rng(3)
X = RNG.standard_normal((600, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 600).astype(np.float32)


def trained(index_type: str, **extra: str) -> Trained:
    hp = hyperparameters.parse({"feature_dim": "6", "k": "5", "sample_size": "600",
                                "predictor_type": "classifier", "index_type": index_type,
                                **extra})
    model = training.build_model(X, Y, hp)
    return Trained(ModelSpec("m", index_type, 600, extra), model, Path("m.tar.gz"), 0.1, 10)


def test_knob_of_flat_is_exact() -> None:
    assert trained("faiss.Flat").knob == "exact"


def test_knob_of_untuned_ivf_is_its_nprobe() -> None:
    t = trained("faiss.IVFFlat", _faiss_index_nprobe="3")
    assert t.model.meta.tuning is None and t.model.meta.nprobe == 3
    assert t.knob == "nprobe=3"


@pytest.mark.parametrize(("index_type", "name"), [("faiss.IVFFlat", "nprobe"),
                                                  ("faiss.HNSW", "efSearch")])
def test_knob_of_a_tuned_index_names_the_tuned_value(index_type: str, name: str) -> None:
    t = trained(index_type, _target_recall="0.9")
    tuning = t.model.meta.tuning
    assert tuning is not None and tuning["knob"] == name
    assert t.knob == f"{name}={tuning['value']} (tuned)"


# ---------------------------------------------------------------- run: the data paths


def test_check_paths_accepts_nothing_given() -> None:
    run.check_paths(None, None)  # the defaults are looked for later, each on its own


def test_a_missing_covtype_path_is_a_channel_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "covtype.csv.gz"
    with pytest.raises(ChannelError) as err:
        run.check_paths(missing, None)
    message = str(err.value)
    assert message.startswith(f"--covtype-path {missing}: no such file")
    assert "Kaggle" in message


def test_a_covtype_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match=r"--covtype-path .*: no such file"):
        run.check_paths(tmp_path, None)


def test_a_fashion_folder_missing_files_names_each(tmp_path: Path) -> None:
    (tmp_path / datasets.FASHION_FILES["train_images"]).write_bytes(b"")
    with pytest.raises(DataError) as err:
        run.check_paths(None, tmp_path)
    message = str(err.value)
    assert message.startswith(f"--fashion-path {tmp_path}: missing ")
    for key, name in datasets.FASHION_FILES.items():
        assert (name in message) == (key != "train_images"), name
    assert run.FASHION_TRUTH in message


def test_check_paths_passes_complete_inputs(tmp_path: Path) -> None:
    covtype = tmp_path / "covtype.csv"
    covtype.write_text("1,2\n")
    for name in datasets.FASHION_FILES.values():
        (tmp_path / name).write_bytes(b"")
    run.check_paths(covtype, tmp_path)  # contents are read (and checked) later


def test_covtype_file_given_is_used_and_named(tmp_path: Path) -> None:
    path = tmp_path / "train.csv.gz"
    path.write_bytes(b"")
    assert run.covtype_file(path) == (path, f"{path} (--covtype-path)")


def test_covtype_file_given_but_missing_is_a_channel_error(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match=rf"{tmp_path / 'no.csv'}: no such file"):
        run.covtype_file(tmp_path / "no.csv")


def test_covtype_file_without_a_path_or_network_says_to_pass_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENKNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENKNN_COVTYPE_URLS", "http://127.0.0.1:9/covtype.data.gz")
    found, why = run.covtype_file(None)
    assert found is None
    assert why.startswith("no covtype data (could not download covtype.data.gz")
    assert why.endswith("): pass --covtype-path, e.g. Kaggle's forest-cover-type "
                        "train.csv.gz")
    assert ";" not in why  # the reason is cut at its first clause


def test_fashion_dir_given_is_used_unchecked(tmp_path: Path) -> None:
    assert run.fashion_dir(tmp_path / "later") == tmp_path / "later"


def test_fashion_dir_defaults_to_debians_copy_only_where_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path)
    assert run.fashion_dir(None) is None
    (tmp_path / datasets.FASHION_FILES["train_images"]).write_bytes(b"")
    assert run.fashion_dir(None) == tmp_path


def test_run_fashion_without_data_says_to_pass_the_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    why = run.run_fashion(BenchConfig.make(True, 1), None, tmp_path)
    assert why == (f"Fashion-MNIST not found in {tmp_path / 'absent'}: pass --fashion-path")


def test_a_run_with_nothing_to_measure_is_a_client_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    monkeypatch.setenv("OPENKNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENKNN_COVTYPE_URLS", "http://127.0.0.1:9/covtype.data.gz")
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setattr(run, "set_threads", lambda n: None)  # leave this process's faiss be
    with pytest.raises(ClientError, match=r"^nothing to measure: no covtype data .*; "
                                          r"Fashion-MNIST not found in "):
        run.run(BenchConfig.make(True, 1), tmp_path / "out")
    assert not (tmp_path / "out" / "report.md").exists()
