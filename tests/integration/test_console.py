"""The web console in a real browser: Debian's headless Chromium, driven by Playwright, against a
running `openknn up` holding what boto3 made there (a completed training job, a failed one with
k=0, InService endpoints). Every page is reached by clicks from the first one; the pages show
the statuses, hyperparameters, the metric, the `#test_score` line, the failure reason and the
endpoint's instance type; "try it" answers; accuracy by k at the model's k is the job's own
test metric; a deletion from the console is gone from boto3's ListEndpoints; a `<script>` in a
log line is text; polling stops while the tab is hidden; with --auth the console needs a key
pair. With OPENKNN_CONSOLE_SCREENSHOTS=DIR each page is saved as DIR/<name>.png (1280x800;
docs/console.md shows them)."""

from __future__ import annotations

import io
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openknn.sdk import write_numpy_to_dense_tensor
from openknn.service.state import State

from ..service_helpers import service
from .test_service_endpoints import ROWS, Aws, in_service
from .test_service_training import BUCKET, HP, IMAGE, ROLE, SPLITS, X, Y, request, wait

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = ("apt-get install -y chromium chromium-driver (Debian's Chromium; .ci/run installs it) "
           "and pip install -e '.[dev]' (Playwright)")
if not CHROMIUM.exists():
    pytest.skip(f"no {CHROMIUM}: {INSTALL}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason=f"no Playwright: {INSTALL}")
boto3 = pytest.importorskip("boto3")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = os.environ.get("OPENKNN_CONSOLE_SCREENSHOTS")
P = "/_openknn/console"
SCRIPT = "<script>window.__pwned = 1</script>"
WAIT_MS = 20_000
REFUSED = re.compile(r"Failed to load resource: .* status of 40[13] ")  # the sign-in page's


def shot(page: Any, name: str, at: str | None = None) -> None:
    """The page (from its top, or scrolled to the element ``at``) as DIR/<name>.png, where
    OPENKNN_CONSOLE_SCREENSHOTS names DIR."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    if at is None:
        page.evaluate("window.scrollTo(0, 0)")
    else:
        page.locator(at).evaluate("e => e.scrollIntoView({block: 'start'})")
    path = Path(SHOTS) / f"{name}.png"
    page.screenshot(path=str(path))
    try:  # 256 colours: a third of the bytes, and the same to the eye for these pages
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        flat = image.convert("RGB").quantize(256, Image.Quantize.MEDIANCUT,
                                             dither=Image.Dither.NONE)
    flat.save(path, optimize=True)


def create_endpoint(aws: Aws, name: str, instance_type: str, model_data: str) -> None:
    """SDK v2's deploy (CreateModel, CreateEndpointConfig, CreateEndpoint), not waited for."""
    aws.sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": IMAGE, "Environment": {}, "ModelDataUrl": model_data})
    aws.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialVariantWeight": 1,
        "InitialInstanceCount": 1, "InstanceType": instance_type}])
    aws.sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aws]:
    """A service with the tutorial's channels, a completed job and a failed one (k=0), and
    three InService endpoints of the completed job's model (one on a GPU instance type)."""
    root = tmp_path_factory.mktemp("console")
    with service(root / "home", root / "up.log") as (proc, url):
        a = Aws(url, root / "home", root / "up.log", proc)
        a.s3.create_bucket(Bucket=BUCKET)
        for name, rows in SPLITS.items():
            buf = io.BytesIO()
            write_numpy_to_dense_tensor(buf, X[rows], Y[rows])
            buf.seek(0)
            a.s3.upload_fileobj(buf, BUCKET, f"knn/{name}/recordio-pb-data")
        a.sm.create_training_job(**request("console-knn"))
        small = {**HP, "sample_size": "60"}  # a second model, to compare with
        a.sm.create_training_job(**request("console-small", HyperParameters=small))
        a.sm.create_training_job(**request("console-k0", HyperParameters={**HP, "k": "0"}))
        models = {}
        for name in ("console-knn", "console-small"):
            job = wait(a.sm, name)
            assert job["TrainingJobStatus"] == "Completed", job
            models[name] = job["ModelArtifacts"]["S3ModelArtifacts"]
        a.model_data = models["console-knn"]
        assert wait(a.sm, "console-k0")["TrainingJobStatus"] == "Failed"
        for name, instance_type, job_name in (("console-cpu", "ml.m4.xlarge", "console-knn"),
                                              ("console-gpu", "ml.p2.xlarge", "console-small"),
                                              ("console-doomed", "ml.m5.large", "console-knn")):
            create_endpoint(a, name, instance_type, models[job_name])
        for name in ("console-cpu", "console-gpu", "console-doomed"):
            assert in_service(a, name)["EndpointStatus"] == "InService"
        a.s3.put_object(Bucket=BUCKET, Key="knn/batch/rows.csv", Body=ROWS.encode())
        a.sm.create_transform_job(
            TransformJobName="console-batch", ModelName="console-cpu",
            TransformInput={"DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/knn/batch/"}},
                "ContentType": "text/csv", "SplitType": "Line"},
            TransformOutput={"S3OutputPath": f"s3://{BUCKET}/knn/batch-out/",
                             "Accept": "application/jsonlines", "AssembleWith": "Line"},
            TransformResources={"InstanceCount": 1, "InstanceType": "ml.m5.large"})
        deadline = time.monotonic() + 60
        while (a.sm.describe_transform_job(TransformJobName="console-batch")[
                "TransformJobStatus"] == "InProgress"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # a log line as a job could write it (its text is the job's to choose)
        state = State(a.home)
        stream = next(s for s, _ in state.streams("/aws/sagemaker/TrainingJobs", "console-knn/"))
        state.append_logs("/aws/sagemaker/TrainingJobs", stream,
                          [(int(time.time() * 1000), f"a channel said {SCRIPT}")])
        state.close()
        yield a


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium with a fresh profile; a new page per test (``page``)."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=ARGS, headless=True,
            viewport={"width": 1280, "height": 800}, accept_downloads=True)
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A tab that fails its test on any script error (a CSP refusal included)."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" and not
           REFUSED.match(m.text) else None)
    tab.set_default_timeout(WAIT_MS)
    yield tab
    tab.close()
    assert errors == []


def metric(aws: Aws, job: str) -> float:
    described = aws.sm.describe_training_job(TrainingJobName=job)
    return float(described["FinalMetricDataList"][0]["Value"])


def nav(page: Any, label: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=label).click()


def row(page: Any, text: str) -> Any:
    return page.locator("tr", has_text=text).first


def test_every_page_is_reached_by_clicks_from_the_home_page(aws: Aws, page: Any) -> None:
    page.goto(aws.url + "/")
    assert page.locator("#env-line").inner_text() == (
        f'eval "$(openknn env --endpoint-url {aws.url})"')
    assert "Completed" in page.locator(".tile", has_text="Training jobs").inner_text()
    shot(page, "home")

    nav(page, "Training jobs")
    assert "Completed" in row(page, "console-knn").inner_text()
    assert "Failed" in row(page, "console-k0").inner_text()
    shot(page, "training-jobs")
    page.get_by_label("Status").select_option("Failed")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"status=Failed"))
    assert page.locator("table.list tbody tr").count() == 1
    page.get_by_role("link", name="console-k0", exact=True).click()
    reason = aws.sm.describe_training_job(TrainingJobName="console-k0")["FailureReason"]
    assert reason.startswith("ClientError: Hyperparameter k: 0 ")
    assert page.locator(".failure p").inner_text() == reason
    shot(page, "training-job-failed")

    nav(page, "Training jobs")
    page.get_by_role("link", name="console-knn", exact=True).click()
    job = aws.sm.describe_training_job(TrainingJobName="console-knn")
    [metric] = job["FinalMetricDataList"]
    assert row(page, "test:accuracy").locator(".metric-value").inner_text() == (
        f"{metric['Value']:.6g}")
    hps = page.locator("table.hyperparameters")
    assert hps.locator("tr", has_text="sample_size").inner_text().split() == ["sample_size", "400"]
    assert page.locator("table.loglines tr.hl", has_text="#test_score").count() == 1
    assert page.locator("a.artifact").get_attribute("href") == (
        f"{P}/s3/{BUCKET}/knn/output/console-knn/output/model.tar.gz")
    shot(page, "training-job")
    shot(page, "training-job-log", "#log")
    with page.expect_download() as download:
        page.locator("a.artifact").click()
    assert Path(download.value.path()).read_bytes()[:2] == b"\x1f\x8b"  # model.tar.gz

    nav(page, "Models")
    page.get_by_role("link", name="console-cpu", exact=True).click()
    assert page.get_by_role("link", name="console-knn", exact=True).count() == 1  # its job
    shot(page, "model")
    nav(page, "Endpoint configurations")
    page.get_by_role("link", name="console-gpu", exact=True).click()
    assert "ml.p2.xlarge" in page.locator("table.variants").inner_text()
    shot(page, "endpoint-config")

    nav(page, "Endpoints")
    assert "ml.m4.xlarge" in row(page, "console-cpu").inner_text()
    assert "InService" in row(page, "console-cpu").inner_text()
    shot(page, "endpoints")
    page.get_by_role("link", name="console-gpu", exact=True).click()
    variant = page.locator("table.variants tbody tr").first
    assert variant.locator(".instance-type").inner_text() == "ml.p2.xlarge"
    assert variant.locator(".device").inner_text().startswith(("GPU 0", "CPU (a GPU instance"))
    assert variant.locator(".workers").inner_text() == "1 / 1"

    nav(page, "Batch transform")
    assert "Completed" in row(page, "console-batch").inner_text()
    page.get_by_role("link", name="console-batch", exact=True).click()
    settings = page.locator("#transform-summary").inner_text()
    assert f"s3://{BUCKET}/knn/batch/" in settings and f"s3://{BUCKET}/knn/batch-out/" in settings
    assert "application/jsonlines" in settings
    shot(page, "transform-job")
    nav(page, "S3")
    page.get_by_role("link", name=BUCKET).click()
    page.get_by_role("link", name="knn/").click()
    page.get_by_role("link", name="test/").click()
    assert row(page, "recordio-pb-data").locator("td.num").inner_text().endswith("KiB")
    shot(page, "s3")


def test_a_script_in_a_log_line_is_text(aws: Aws, page: Any) -> None:
    page.goto(f"{aws.url}{P}/training-jobs/console-knn")
    line = page.locator("table.loglines td.m", has_text="a channel said")
    assert line.inner_text() == f"a channel said {SCRIPT}"
    assert page.evaluate("window.__pwned") is None
    # and in the live tail's fragments: a line that arrives while the endpoint's page is open
    page.goto(f"{aws.url}{P}/endpoints/console-cpu")
    state = State(aws.home)
    state.append_logs("/aws/sagemaker/Endpoints/console-cpu", "openknn",
                      [(int(time.time() * 1000), f"late {SCRIPT}")])
    state.close()
    late = page.locator("table.loglines td.m", has_text="late ")
    late.wait_for()
    assert late.inner_text() == f"late {SCRIPT}"
    assert page.evaluate("window.__pwned") is None


def test_try_it_answers_and_the_counters_move(aws: Aws, page: Any) -> None:
    page.goto(f"{aws.url}{P}/endpoints/console-cpu")
    form = page.locator("#try-it")
    assert len(form.locator("textarea").input_value().splitlines()) == 3  # the test channel's
    form.get_by_role("button", name="Send").click()
    status = page.locator("#try-it-status")
    page.locator("#try-it-status[data-status]").wait_for()
    assert status.inner_text().startswith("200 · application/json")
    answer = page.locator("#try-it-answer").inner_text()
    assert answer.count('"predicted_label"') == 3
    form.get_by_label("verbose").check()
    form.get_by_role("button", name="Send").click()
    page.locator("#try-it-answer", has_text='"distances"').wait_for()
    page.locator('[data-total="requests"]', has_text=re.compile(r"^[1-9]")).wait_for()
    page.locator('#metrics[data-readings="3"]').wait_for(state="attached")
    shot(page, "endpoint")
    shot(page, "endpoint-try-it", "#metrics")


def test_polling_stops_while_the_tab_is_hidden(aws: Aws, page: Any) -> None:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if "/metrics" in r.url else None)
    page.goto(f"{aws.url}{P}/endpoints/console-cpu")
    page.locator('#metrics[data-readings="2"]').wait_for(state="attached")
    page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    page.wait_for_timeout(300)  # a request already on its way
    before = len(seen)
    page.wait_for_timeout(4500)
    assert len(seen) == before
    page.evaluate("""() => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => false});
        document.dispatchEvent(new Event('visibilitychange'));
    }""")
    page.wait_for_timeout(500)
    assert len(seen) > before  # at once, not a period later


def test_accuracy_by_k_meets_the_jobs_metric_at_its_k(aws: Aws, page: Any) -> None:
    page.goto(f"{aws.url}{P}/endpoints/console-cpu")
    card = page.locator("#accuracy-card")
    assert card.get_by_label(re.compile("^Test set")).input_value() == f"s3://{BUCKET}/knn/test/"
    card.get_by_role("button", name="Plot").click()
    page.locator("#accuracy-status[data-done]").wait_for()
    job = aws.sm.describe_training_job(TrainingJobName="console-knn")
    accuracy = job["FinalMetricDataList"][0]["Value"]
    at_k = card.locator('#accuracy-table tr[data-key="5"] td').nth(1).inner_text()
    assert at_k == f"{accuracy:.4f}"
    assert card.locator("#accuracy-table tbody tr").count() == 5  # k = 1..5
    assert card.locator("#accuracy-chart svg path").count() == 1
    shot(page, "accuracy-by-k", "#accuracy-card")


def test_endpoints_compare_on_one_test_set(aws: Aws, page: Any) -> None:
    page.goto(aws.url + "/")
    nav(page, "Compare")
    form = page.locator("#compare")
    form.get_by_label("console-doomed").uncheck()
    form.get_by_role("button", name="Compare").click()
    page.locator("#compare-status[data-done]").wait_for(timeout=60_000)
    results = {r.split()[0]: r.split()[2]
               for r in page.locator("#compare-table tbody tr").all_inner_texts()}
    # each endpoint's accuracy over its job's test channel is that job's test metric
    assert results == {endpoint: f"{metric(aws, job):.4f}" for endpoint, job in (
        ("console-cpu", "console-knn"), ("console-gpu", "console-small"))}
    assert page.locator("#compare-scatter svg circle").count() == 2
    assert page.locator("#compare-curves svg path").count() == 2
    shot(page, "compare", "#compare-status")


def test_deleting_an_endpoint_from_the_console_is_deleteendpoint(aws: Aws, page: Any) -> None:
    page.goto(f"{aws.url}{P}/endpoints/console-doomed")
    page.get_by_role("link", name="Delete").click()
    assert "Delete endpoint console-doomed?" in page.locator("h1").inner_text()
    shot(page, "delete-endpoint")
    page.get_by_role("button", name="Delete endpoint").click()
    page.wait_for_url(re.compile(r"/endpoints\?deleted=console-doomed$"))
    assert "Deleted endpoint console-doomed" in page.locator(".notice").inner_text()
    names = [e["EndpointName"] for e in aws.sm.list_endpoints()["Endpoints"]]
    assert "console-doomed" not in names and "console-cpu" in names
    # its config and model stay, as after boto3's DeleteEndpoint
    assert aws.sm.describe_endpoint_config(EndpointConfigName="console-doomed")


KEYS = """[alice]
aws_access_key_id = AKIACONSOLE000000000
aws_secret_access_key = alice-secret
"""


def test_with_auth_the_console_needs_a_key_pair(tmp_path: Path, page: Any) -> None:
    (tmp_path / "keys.ini").write_text(KEYS)
    with service(tmp_path / "home", tmp_path / "up.log",
                 ["--auth", str(tmp_path / "keys.ini")]) as (_, url):
        page.goto(f"{url}{P}/training-jobs")
        assert page.locator("h1").inner_text() == "Sign in"
        shot(page, "sign-in")
        page.get_by_label("Access key id").fill("AKIACONSOLE000000000")
        page.get_by_label("Secret access key").fill("not-the-secret")
        page.get_by_role("button", name="Sign in").click()
        assert "not a key pair" in page.locator(".error").inner_text()
        page.get_by_label("Secret access key").fill("alice-secret")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{url}{P}/training-jobs")  # where it was going
        assert page.locator("h1").inner_text() == "Training jobs"
        [cookie] = page.context.cookies(url)
        assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
        page.get_by_role("button", name="Sign out").click()
        assert page.locator("h1").inner_text() == "Sign in"
        page.goto(f"{url}{P}/")
        assert page.locator("h1").inner_text() == "Sign in"
