"""The console's pure parts: the pages' rows and fields shaped from Describe documents
(``console.views``), the endpoint figures from the workers' Prometheus counters
(``console.metrics``), sign-in sessions and CSRF checks (``console.sessions``) and the test sets
the plots read from the store (``console.testset``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from openknn.core.evaluate import Score
from openknn.errors import DataError
from openknn.formats import recordio
from openknn.service.auth import KeyPair, Keys
from openknn.service.console import metrics, sessions, testset, views
from openknn.service.s3.store import Store
from openknn.service.state import LogEvent
from openknn.serving.metrics import EndpointMetrics

T0 = 1_800_000_000.0


def job(name: str, status: str = "Completed", created: float = T0, **more: object) -> dict:
    doc = {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:0:training-job/"
           f"{name}", "TrainingJobStatus": status, "SecondaryStatus": status,
           "CreationTime": created, "TrainingEndTime": created + 75,
           "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/out/{name}/output/model.tar.gz"}}
    doc.update(more)
    return doc


# -- small formats -----------------------------------------------------------------------------

@pytest.mark.parametrize(("start", "end", "now", "shown"), [
    (T0, T0 + 42.9, 0, "42 s"), (T0, T0 + 185, 0, "3 min 05 s"), (T0, T0 + 7620, 0, "2 h 07 min"),
    (T0, None, T0 + 61, "1 min 01 s"), (None, None, T0, ""), (T0, T0 - 5, 0, "0 s")])
def test_durations_read_as_people_say_them(start: float | None, end: float | None, now: float,
                                            shown: str) -> None:
    assert views.duration(start, end, now) == shown


def test_sizes_times_badges_and_counts() -> None:
    assert [views.size(n) for n in (812, 1536, 3 << 20)] == ["812 B", "1.5 KiB", "3.0 MiB"]
    assert views.when(None) == ""
    assert views.when_ms(1_800_000_000_123).endswith(".123")
    assert [views.badge(s) for s in ("Completed", "InService", "Failed", "InProgress",
                                     "Creating", "Stopped")] == [
        "good", "good", "bad", "running", "running", "idle"]
    docs = [job("a"), job("b", "Failed"), job("c"), job("d", "InProgress")]
    assert views.counts(docs, "TrainingJobStatus") == [("Completed", 2), ("Failed", 1),
                                                        ("InProgress", 1)]


def test_s3_links_go_to_the_download_or_the_listing_of_the_embedded_store() -> None:
    assert views.s3_link("s3://b/out/j/output/model.tar.gz", True) == (
        "/_openknn/console/s3/b/out/j/output/model.tar.gz")
    assert views.s3_link("s3://b/knn/train", True, prefix=True) == (
        "/_openknn/console/s3/b?prefix=knn/train")
    assert views.s3_link("s3://b/knn/a b#c.csv", True) == "/_openknn/console/s3/b/knn/a%20b%23c.csv"
    assert views.s3_link("s3://b/", True) == "/_openknn/console/s3/b"
    assert views.s3_link("s3://b/k", False) is None  # another S3: nothing here to show
    assert views.s3_link("file:///tmp/x", True) is None
    assert views.link("training-jobs", "a/b") == "/_openknn/console/training-jobs/a%2Fb"


# -- training jobs -------------------------------------------------------------------------------

def test_the_training_jobs_list_filters_and_sorts() -> None:
    docs = [job("knn-1", created=T0), job("knn-2", "Failed", created=T0 + 10),
            job("other", created=T0 + 20)]
    rows = views.training_rows(docs, T0 + 100)
    assert [r["name"] for r in rows] == ["other", "knn-2", "knn-1"]  # newest first
    assert rows[0]["duration"] == "1 min 15 s" and rows[0]["link"].endswith("/other")
    assert [r["name"] for r in views.training_rows(docs, T0, order="asc")] == [
        "knn-1", "knn-2", "other"]
    assert [r["name"] for r in views.training_rows(docs, T0, status="Failed")] == ["knn-2"]
    assert [r["name"] for r in views.training_rows(docs, T0, name="KNN")] == ["knn-2", "knn-1"]


def test_a_training_jobs_page_has_sagemakers_sections() -> None:
    doc = job("knn", HyperParameters={"k": "10", "feature_dim": "54"},
              AlgorithmSpecification={"TrainingImage": "x/knn:1", "TrainingInputMode": "File"},
              ResourceConfig={"InstanceType": "ml.m5.2xlarge", "InstanceCount": 2},
              InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv",
                                "DataSource": {"S3DataSource": {
                                    "S3Uri": "s3://b/knn/train/", "S3DataType": "S3Prefix",
                                    "S3DataDistributionType": "ShardedByS3Key"}}}],
              OutputDataConfig={"S3OutputPath": "s3://b/out"},
              FinalMetricDataList=[{"MetricName": "test:accuracy", "Value": 0.92233,
                                    "Timestamp": T0}],
              SecondaryStatusTransitions=[
                  {"Status": "Starting", "StartTime": T0, "EndTime": T0 + 2,
                   "StatusMessage": "Launching requested ML instances"},
                  {"Status": "Completed", "StartTime": T0 + 2, "EndTime": T0 + 2,
                   "StatusMessage": "Training job completed"}])
    page = views.training_detail(doc, T0 + 100, embedded=True)
    assert page["hyperparameters"] == [("feature_dim", "54"), ("k", "10")]
    assert page["metrics"][0]["name"] == "test:accuracy"
    assert page["metrics"][0]["value"] == "0.92233"
    assert [t["status"] for t in page["history"]] == ["Starting", "Completed"]
    assert page["history"][0]["took"] == "2 s"
    [train] = page["channels"]
    assert (train["uri"], train["distribution"], train["content_type"], train["input_mode"]) == (
        "s3://b/knn/train/", "ShardedByS3Key", "text/csv", "File")
    assert train["link"] == "/_openknn/console/s3/b?prefix=knn/train/"
    assert page["model_link"] == "/_openknn/console/s3/b/out/knn/output/model.tar.gz"
    assert (page["instance_type"], page["instance_count"], page["running"]) == (
        "ml.m5.2xlarge", 2, False)
    failed = views.training_detail(job("bad", "Failed", FailureReason="ClientError: k"), T0, True)
    assert failed["failure"] == "ClientError: k" and failed["model_link"] is None
    assert views.training_detail(job("run", "InProgress"), T0, True)["running"] is True
    assert views.test_channel({"InputDataConfig": [{"ChannelName": "test", "DataSource": {
        "S3DataSource": {"S3Uri": "s3://b/t/"}}}]}) == {"uri": "s3://b/t/", "content_type": ""}
    assert views.test_channel(doc) is None


def test_the_metric_lines_the_job_prints_are_highlighted() -> None:
    score = Score("classifier", total=9, rows=10)
    assert all(views.is_highlight(line) for line in score.log_lines())
    assert not views.is_highlight("Building faiss.Flat (L2) over data (400, 6)")
    rows = views.log_rows([LogEvent(7, "j/algo-1-1", 1_800_000_000_000, 0, "<script>x</script>"),
                           LogEvent(8, "j/algo-1-1", 1_800_000_000_001, 0,
                                    score.log_lines()[0])])
    assert [(r["id"], r["message"], r["highlight"]) for r in rows] == [
        (7, "<script>x</script>", False), (8, score.log_lines()[0], True)]  # escaping: Jinja's
    assert views.training_log("j") == ("/aws/sagemaker/TrainingJobs", "j/")
    assert views.endpoint_log("e") == ("/aws/sagemaker/Endpoints/e", "")


# -- models, configs, endpoints --------------------------------------------------------------------

MODEL = {"ModelName": "m", "ModelArn": "arn:m", "CreationTime": T0,
         "PrimaryContainer": {"Image": "x/knn:1", "ModelDataUrl":
                              "s3://b/out/knn/output/model.tar.gz", "Environment": {"A": "1"}}}
CONFIG = {"EndpointConfigName": "c", "EndpointConfigArn": "arn:c", "CreationTime": T0,
          "ProductionVariants": [
              {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.p2.xlarge",
               "InitialInstanceCount": 2, "InitialVariantWeight": 1.0},
              {"VariantName": "Old", "ModelName": "gone", "InstanceType": "ml.m4.xlarge",
               "InitialInstanceCount": 1, "InitialVariantWeight": 0.0}]}
GPU_TYPES = {"ml.p2.xlarge": True, "ml.m4.xlarge": False}


def test_models_and_configs_link_to_the_job_and_the_models() -> None:
    jobs = [job("knn"), job("other")]
    page = views.model_detail(MODEL, jobs, [CONFIG], embedded=True)
    assert (page["job"], page["configs"], page["environment"]) == ("knn", ["c"], [("A", "1")])
    assert views.model_detail({**MODEL, "PrimaryContainer": {"ModelDataUrl": "s3://x/y"}},
                              jobs, [], True)["job"] is None
    variants = views.config_variants(CONFIG, {"m": MODEL}, jobs, GPU_TYPES, gpus=0)
    assert [(v["name"], v["model_exists"], v["job"], v["device"]) for v in variants] == [
        ("AllTraffic", True, "knn", "CPU (a GPU instance type; faiss sees no GPU here)"),
        ("Old", False, None, "CPU")]
    assert views.config_variants(CONFIG, {"m": MODEL}, jobs, GPU_TYPES, 1)[0]["device"] == "GPU 0"
    assert views.instance_types(CONFIG) == "ml.p2.xlarge, ml.m4.xlarge"
    assert [r["name"] for r in views.model_rows([MODEL, {**MODEL, "ModelName": "n",
                                                         "CreationTime": T0 + 1}])] == ["n", "m"]


def test_an_endpoints_page_shows_its_workers_and_reason() -> None:
    doc = {"EndpointName": "e", "EndpointArn": "arn:e", "EndpointConfigName": "c",
           "EndpointStatus": "Failed", "FailureReason": "the worker serving s3://b/m exited",
           "CreationTime": T0, "LastModifiedTime": T0 + 3}
    page = views.endpoint_detail(doc, CONFIG, {"m": MODEL}, [job("knn")],
                                 {"AllTraffic": (1, 2)}, GPU_TYPES, 0)
    assert (page["status"], page["badge"], page["failure"]) == (
        "Failed", "bad", "the worker serving s3://b/m exited")
    assert [(v["ready"], v["started"]) for v in page["variants"]] == [(1, 2), (0, 0)]
    assert page["invocation"] == "/endpoints/e/invocations"
    assert views.endpoint_detail(doc, None, {}, [], {}, {}, 0)["variants"] == []
    [row] = views.endpoint_rows([doc], {"c": CONFIG})
    assert (row["instance_types"], row["status"]) == ("ml.p2.xlarge, ml.m4.xlarge", "Failed")


def test_a_transform_jobs_page_has_its_locations() -> None:
    doc = {"TransformJobName": "t", "TransformJobArn": "arn:t", "TransformJobStatus": "Completed",
           "ModelName": "m", "CreationTime": T0, "TransformEndTime": T0 + 4,
           "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                              "S3Uri": "s3://b/in"}},
                              "ContentType": "text/csv", "SplitType": "Line"},
           "TransformOutput": {"S3OutputPath": "s3://b/out", "Accept": "application/jsonlines"},
           "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}}
    page = views.transform_detail(doc, T0, embedded=True)
    assert (page["input_link"], page["output_link"]) == (
        "/_openknn/console/s3/b?prefix=in", "/_openknn/console/s3/b?prefix=out")
    assert (page["split_type"], page["accept"], page["duration"]) == (
        "Line", "application/jsonlines", "4 s")
    assert views.transform_rows([doc], T0)[0]["link"] == "/_openknn/console/transform-jobs/t"


# -- the workers' counters -----------------------------------------------------------------------

def worker_text(latencies: list[float], errors: int = 0) -> str:
    m = EndpointMetrics()
    for seconds in latencies:
        m.observe(200, 3, seconds)
    for _ in range(errors):
        m.observe(400, 0, 0.0001)
    return m.render().decode()


def test_counters_parse_and_sum_over_workers() -> None:
    one = metrics.parse(worker_text([0.003, 0.004]), T0)
    two = metrics.parse(worker_text([0.0004], errors=1), T0)
    assert (one.requests, one.rows, one.errors) == (2, 6, 0)
    both = metrics.combine([one, two], T0)
    assert (both.requests, both.rows, both.errors, both.workers) == (4, 9, 1, 2)
    assert dict(both.buckets)[0.0005] == 2 and dict(both.buckets)[float("inf")] == 4


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    buckets = ((0.001, 0.0), (0.002, 10.0), (0.005, 10.0), (float("inf"), 10.0))
    assert metrics.quantile(0.5, buckets) == pytest.approx(0.0015)
    assert metrics.quantile(0.99, buckets) == pytest.approx(0.00199)
    assert metrics.quantile(0.5, ((0.001, 0.0), (float("inf"), 3.0))) == 0.001  # past the last
    assert metrics.quantile(0.5, ((0.001, 0.0), (float("inf"), 0.0))) is None
    assert metrics.quantile(0.5, ()) is None


def test_a_point_is_the_window_between_two_readings() -> None:
    before = metrics.parse(worker_text([0.003] * 10), T0)
    after = metrics.parse(worker_text([0.003] * 10 + [0.0004] * 20, errors=2), T0 + 2)
    p = metrics.point(before, after)
    assert (p.requests_per_s, p.rows_per_s, p.errors_per_s) == (11.0, 30.0, 1.0)
    assert p.p50_ms is not None and p.p50_ms <= 0.5  # the window's, not the whole history's
    restarted = metrics.parse(worker_text([0.003]), T0 + 4)  # a worker came back from zero
    assert metrics.point(after, restarted).requests_per_s == 0.5
    history = metrics.History()
    assert history.due(T0)
    history.add(before)
    assert not history.due(T0 + 0.5) and history.due(T0 + 1)
    history.add(after)
    summary = metrics.summary(history)
    assert summary["totals"]["requests"] == 32  # type: ignore[index]
    assert len(summary["series"]) == 1  # type: ignore[arg-type]
    assert metrics.summary(metrics.History())["latest"] is None


# -- sign-in -------------------------------------------------------------------------------------

KEYS = Keys(Path("keys.ini"), (KeyPair("alice", "AKIAALICE", "alice-secret"),
                               KeyPair("ci", "123456789012", "ci-secret")))


def test_a_session_needs_a_key_pair_of_the_file_and_expires_idle() -> None:
    now = [T0]
    store = sessions.Sessions(KEYS, clock=lambda: now[0])
    assert store.required
    assert store.sign_in("AKIAALICE", "wrong") is None
    assert store.sign_in("AKIANOBODY", "alice-secret") is None
    alice = store.sign_in("AKIAALICE", "alice-secret")
    assert alice is not None and alice.account == "000000000000"
    assert store.sign_in("123456789012", "ci-secret").account == "123456789012"  # type: ignore
    cookie = sessions.set_cookie(alice)
    assert cookie == f"openknn_console={alice.token}; Path=/; HttpOnly; SameSite=Strict"
    assert store.find(f"other=1; openknn_console={alice.token}") is alice
    assert store.find(None) is None and store.find("openknn_console=forged") is None
    now[0] += sessions.IDLE_S + 1
    assert store.find(f"openknn_console={alice.token}") is None  # idle too long
    bob = store.sign_in("AKIAALICE", "alice-secret")
    assert bob is not None
    store.sign_out(bob)
    assert store.find(f"openknn_console={bob.token}") is None


def test_the_open_console_has_one_session_and_still_checks_csrf() -> None:
    store = sessions.Sessions(None)
    assert not store.required
    session = store.find(None)
    assert session is not None and session is store.find("openknn_console=x")
    assert sessions.csrf_ok(session, session.csrf)
    assert not sessions.csrf_ok(session, None) and not sessions.csrf_ok(session, "guess")


@pytest.mark.parametrize(("headers", "same"), [
    ({"host": "127.0.0.1:8000"}, True),  # no Origin (a same-origin GET form, old browsers)
    ({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000"}, True),
    ({"host": "127.0.0.1:8000", "origin": "http://evil.example"}, False),
    ({"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:9000"}, False),
    ({"host": "127.0.0.1:8000", "origin": "null"}, False)])
def test_posts_from_other_sites_are_told_apart(headers: dict[str, str], same: bool) -> None:
    assert sessions.same_origin(headers) is same


@pytest.mark.parametrize(("target", "goes"), [
    ("/_openknn/console/endpoints?x=1", "/_openknn/console/endpoints?x=1"),
    ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil", "/"), (None, "/")])
def test_sign_in_goes_back_only_to_this_service(target: str | None, goes: str) -> None:
    assert sessions.safe_next(target, "/") == goes


# -- test sets -------------------------------------------------------------------------------------

def put(store: Store, bucket: str, key: str, data: bytes) -> None:
    import hashlib

    blob = store.new_blob(bucket)
    blob.write(data)
    blob.finish()
    store.commit_object(bucket, key, blob, size=len(data), etag=hashlib.md5(data).hexdigest())


def test_a_test_set_is_read_from_csv_or_recordio_up_to_the_rows_asked(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create_bucket("bkt")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    buf = io.BytesIO()
    recordio.write_dense(buf, x[:20], y[:20])
    put(store, "bkt", "test/part-1", buf.getvalue())
    put(store, "bkt", "test/part-2.csv", "".join(
        f"{label:g}," + ",".join(repr(float(v)) for v in row) + "\n"
        for row, label in zip(x[20:], y[20:])).encode())
    found = testset.read(store, "s3://bkt/test/", rows=25)
    assert found.sources == ["s3://bkt/test/part-1", "s3://bkt/test/part-2.csv"]
    np.testing.assert_array_equal(found.features, x[:25])
    np.testing.assert_array_equal(found.labels, y[:25])
    sent = found.to_json()
    assert sent["rows"] == 25 and sent["feature_dim"] == 4
    parsed = np.loadtxt(io.StringIO(str(sent["csv"])), delimiter=",", dtype=np.float32)
    np.testing.assert_array_equal(parsed, x[:25])  # the endpoint reads back the same floats
    assert testset.read(store, "s3://bkt/test/part-2.csv").sources == ["s3://bkt/test/part-2.csv"]
    assert testset.read(store, "s3://bkt/test/", rows=5).features.shape == (5, 4)
    with pytest.raises(DataError, match=r"Test set 's3://bkt/none/': no objects there"):
        testset.read(store, "s3://bkt/none/")
    with pytest.raises(DataError, match=r"give an s3:// URI"):
        testset.read(store, "/tmp/x")
    with pytest.raises(DataError, match=r"a test set is 'text/csv'"):
        testset.read(store, "s3://bkt/test/", "application/json")
    buf = io.BytesIO()
    recordio.write_dense(buf, x[:3])
    put(store, "bkt", "unlabelled/part", buf.getvalue())
    with pytest.raises(DataError, match=r"the records have no labels"):
        testset.read(store, "s3://bkt/unlabelled/")
