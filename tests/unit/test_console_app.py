"""The console's routes in process (the service's ASGI app through httpx's ASGITransport; no
socket, no browser, no workers): user strings are escaped on every page and fragment, pages
carry a script-only-from-self policy, buttons need the session's CSRF token and this site's
Origin and call the API's own handlers (so their refusals are the API's), downloads are
attachments, and with --auth every page but the sign-in needs a session cookie."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from openknn.service.app import Service, ServiceConfig
from openknn.service.auth import KeyPair, Keys

T = TypeVar("T")
URL = "http://127.0.0.1:8000"
P = "/_openknn/console"
HTML = {"Accept": "text/html"}
EVIL = "<script>window.__pwned=1</script>"
NOW = time.time()


def run(service: Service, test: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=service)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=URL) as client:
            return await test(client)

    return asyncio.run(main())


def training_job(name: str, status: str, **more: Any) -> dict[str, Any]:
    doc = {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:"
           f"000000000000:training-job/{name}", "TrainingJobStatus": status,
           "SecondaryStatus": status, "CreationTime": NOW, "LastModifiedTime": NOW,
           "HyperParameters": {"k": EVIL}, "RoleArn": "arn:aws:iam::0:role/R",
           "AlgorithmSpecification": {"TrainingImage": "x/knn:1"},
           "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
           "InputDataConfig": [{"ChannelName": EVIL, "DataSource": {"S3DataSource": {
               "S3Uri": "s3://bkt/knn/train/"}}}],
           "OutputDataConfig": {"S3OutputPath": "s3://bkt/out"},
           "ModelArtifacts": {"S3ModelArtifacts": f"s3://bkt/out/{name}/output/model.tar.gz"},
           "SecondaryStatusTransitions": [{"Status": status, "StartTime": NOW,
                                           "StatusMessage": EVIL}]}
    doc.update(more)
    return doc


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A service whose state holds hostile strings in a failed job, a running job and a model,
    and an S3 object whose bytes are an HTML page."""
    svc = Service(ServiceConfig(tmp_path / "home"))
    svc.state.insert("training-job", "failed", training_job(
        "failed", "Failed", FailureReason=f"ClientError: {EVIL}"))
    svc.state.insert("training-job", "running", training_job("running", "InProgress"))
    svc.state.append_logs("/aws/sagemaker/TrainingJobs", "failed/algo-1-1",
                          [(int(NOW * 1000), f"line {EVIL}")])
    svc.hosting.create_model({"ModelName": "m1", "PrimaryContainer": {
        "Image": "x/knn:1", "ModelDataUrl": "s3://bkt/out/failed/output/model.tar.gz",
        "Environment": {"NAME": EVIL}}}, _caller())
    assert svc.console.parts.store is not None
    svc.console.parts.store.create_bucket("bkt")
    blob = svc.console.parts.store.new_blob("bkt")
    blob.write(b"<html><script>alert(1)</script></html>")
    blob.finish()
    svc.console.parts.store.commit_object("bkt", "page.html", blob, size=38, etag="e",
                                          content_type="text/html")
    yield svc
    svc.close()


def _caller() -> Any:
    from openknn.service.api import Caller

    return Caller()


def csrf(page: str) -> str:
    found = re.search(r'<meta name="csrf" content="([^"]+)">', page)
    assert found is not None
    return found.group(1)


PAGES = ["/", f"{P}/", f"{P}/training-jobs", f"{P}/training-jobs/failed",
         f"{P}/training-jobs/running", f"{P}/training-jobs/failed?part=job_summary",
         f"{P}/models", f"{P}/models/m1", f"{P}/endpoint-configs", f"{P}/endpoints",
         f"{P}/transform-jobs", f"{P}/compare", f"{P}/s3", f"{P}/s3/bkt",
         f"{P}/logs?group=/aws/sagemaker/TrainingJobs&prefix=failed/&after=0"]


def test_every_page_escapes_what_users_gave(service: Service) -> None:
    async def pages(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(path, headers=HTML) for path in PAGES]

    for path, answer in zip(PAGES, run(service, pages)):
        assert answer.status_code == 200, (path, answer.text)
        assert "<script>window" not in answer.text, path
        assert "script-src 'self'" in answer.headers["content-security-policy"], path
        assert "<script>" not in answer.text.replace(
            '<script src="/_openknn/console/static/', ""), path
    texts = dict(zip(PAGES, (a.text for a in run(service, pages))))
    escaped = "&lt;script&gt;window.__pwned=1&lt;/script&gt;"
    for path in (f"{P}/training-jobs/failed", f"{P}/models/m1",
                 f"{P}/logs?group=/aws/sagemaker/TrainingJobs&prefix=failed/&after=0"):
        assert escaped in texts[path], path


def test_a_running_jobs_parts_keep_polling_and_a_finished_ones_stop(service: Service) -> None:
    async def parts(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(f"{P}/training-jobs/{name}?part=job_summary")
                for name in ("running", "failed")] + [
            await client.get(f"{P}/training-jobs/failed?part=nope")]

    running, failed, unknown = run(service, parts)
    assert 'data-live="/_openknn/console/training-jobs/running?part=job_summary"' in running.text
    assert "data-done" not in running.text.split(">", 1)[0]
    assert "data-done" in failed.text.split(">", 1)[0]
    assert unknown.status_code == 404


def test_stop_is_stoptrainingjob_behind_a_csrf_token_and_this_sites_origin(
        service: Service) -> None:
    stop = f"{P}/training-jobs/running/stop"

    async def clicks(client: httpx.AsyncClient) -> list[httpx.Response]:
        confirm = await client.get(stop, headers=HTML)
        token = csrf(confirm.text)
        return [confirm,
                await client.post(stop, data={"csrf": "guessed"}),
                await client.post(stop, data={"csrf": token},
                                  headers={"Origin": "http://evil.example"}),
                await client.post(stop, data={"csrf": token}, headers={"Origin": URL}),
                await client.post(stop, data={"csrf": token})]

    confirm, guessed, foreign, stopped, again = run(service, clicks)
    assert "Stop training job" in confirm.text and "StopTrainingJob" in confirm.text
    assert guessed.status_code == foreign.status_code == 403
    assert stopped.status_code == 303
    assert stopped.headers["location"] == f"{P}/training-jobs/running"
    doc = service.state.get("training-job", "running")
    assert doc is not None and doc["TrainingJobStatus"] == "Stopping"
    # the API's own refusal, in its words, for a job that is no longer InProgress
    assert again.status_code == 400
    assert ("ValidationException: The request was rejected because the training job is in "
            "status Stopping.") in again.text


def test_deletes_are_the_apis_deletes(service: Service) -> None:
    async def clicks(client: httpx.AsyncClient) -> list[httpx.Response]:
        token = csrf((await client.get(f"{P}/", headers=HTML)).text)
        return [await client.post(f"{P}/models/m1/delete", data={"csrf": token}),
                await client.get(f"{P}/models/m1/delete", headers=HTML),
                await client.post(f"{P}/models/m1/delete", data={"csrf": token}),
                await client.post(f"{P}/endpoints/nope/delete", data={"csrf": token}),
                await client.get(f"{P}/models?deleted=m1", headers=HTML)]

    deleted, confirm_gone, twice, endpoint, listed = run(service, clicks)
    assert deleted.status_code == 303 and deleted.headers["location"] == (
        f"{P}/models?deleted=m1")
    assert service.state.get("model", "m1") is None
    assert confirm_gone.status_code == 404
    assert twice.status_code == 400 and (
        'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/m1".' in
        html.unescape(twice.text))
    assert endpoint.status_code == 400 and "Could not find endpoint" in endpoint.text
    assert "Deleted model <code>m1</code>" in listed.text


def test_objects_download_as_attachments_never_as_pages(service: Service) -> None:
    async def get(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get(f"{P}/s3/bkt/page.html"),
                await client.get(f"{P}/s3/bkt/missing", headers=HTML)]

    page, missing = run(service, get)
    assert page.content == b"<html><script>alert(1)</script></html>"
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"] == "attachment; filename*=UTF-8''page.html"
    assert page.headers["content-security-policy"] == "sandbox"
    assert missing.status_code == 404 and "NoSuchKey" in missing.text


KEYS = Keys(Path("keys.ini"), (KeyPair("alice", "AKIAALICE", "alice-secret"),))


def test_with_auth_everything_but_sign_in_needs_a_session(tmp_path: Path) -> None:
    svc = Service(ServiceConfig(tmp_path / "home", keys=KEYS))

    async def visits(client: httpx.AsyncClient) -> dict[str, Any]:
        out: dict[str, Any] = {
            "home": await client.get("/", headers=HTML),
            "api": await client.get(f"{P}/api/endpoints/x/metrics"),
            "static": await client.get(f"{P}/static/console.css"),
            "health": await client.get("/_openknn/health"),
            "wrong": await client.post(f"{P}/login", data={
                "access_key": "AKIAALICE", "secret_key": "nope", "next": f"{P}/models"}),
            "right": await client.post(f"{P}/login", data={
                "access_key": "AKIAALICE", "secret_key": "alice-secret",
                "next": f"{P}/models"})}
        client.cookies.set("openknn_console", out["right"].cookies["openknn_console"])
        out["signed"] = await client.get(f"{P}/models", headers=HTML)
        out["out"] = await client.post(f"{P}/logout", data={"csrf": csrf(out["signed"].text)})
        client.cookies.clear()
        out["after"] = await client.get(f"{P}/models", headers=HTML)
        return out

    try:
        seen = run(svc, visits)
    finally:
        svc.close()
    assert seen["home"].status_code == 403 and "--auth" in seen["home"].text
    assert 'name="secret_key"' in seen["home"].text
    assert seen["api"].status_code == 403 and "sign in" in seen["api"].json()["message"]
    assert seen["static"].status_code == 200 and seen["health"].status_code == 200
    assert seen["wrong"].status_code == 401 and 'value="AKIAALICE"' in seen["wrong"].text
    assert seen["right"].status_code == 303 and seen["right"].headers["location"] == (
        f"{P}/models")
    assert re.fullmatch(r"openknn_console=[\w-]{40,}; Path=/; HttpOnly; SameSite=Strict",
                        seen["right"].headers["set-cookie"])
    assert seen["signed"].status_code == 200 and "AKIAALICE" in seen["signed"].text
    assert seen["out"].status_code == 303 and "Max-Age=0" in seen["out"].headers["set-cookie"]
    assert seen["after"].status_code == 403
