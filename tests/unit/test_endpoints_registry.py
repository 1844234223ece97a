"""The local endpoint registry (issue 10, part 7): an entry is trusted only if its process is
that endpoint; nothing is signalled on a timeout, through a proxy or for a reused PID; names
follow SageMaker's pattern; creation is atomic; files are private; logs go with entries."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from openknn.core import index as fi
from openknn.core.model import KnnModel, ModelMeta
from openknn.errors import ClientError
from openknn.jobs import artifact
from openknn.sdk import CSVSerializer, JSONDeserializer, Predictor
from openknn.sdk import endpoints as registry
from openknn.serving import process

from ..integration.cli_helpers import openknn

PATTERN = r"\[a-zA-Z0-9\]\(-\*\[a-zA-Z0-9\]\)\{0,62\}"
EXISTS = r'^Cannot create already existing endpoint "arn:aws:sagemaker:local:000000000000:'
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    meta = ModelMeta(k=3, predictor_type="classifier", feature_dim=4, index_dim=4,
                     num_points=60)
    model = KnnModel(meta, fi.build(x, 3, fi.IndexConfig()), (x[:, 0] > 0).astype(np.float32))
    path = tmp_path_factory.mktemp("model") / "model.tar.gz"
    artifact.write_model_tar(model, path)
    return path


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("OPENKNN_HOME", str(tmp_path / "home"))
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
    yield tmp_path / "home" / "endpoints"
    for path in (tmp_path / "home" / "endpoints").glob("*.json"):  # stop what a test started
        info = registry._read(path)
        if info is not None and info.pid > 0 and registry._started_with(info.pid, info.token):
            os.kill(info.pid, signal.SIGCONT)
            registry.delete(info.name)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process of this user (what a reused PID points at)."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def no_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a system without /proc: identity rests on /ping's proof alone."""
    monkeypatch.setattr(registry, "_started_with", lambda pid, token: None)


def fake_entry(name: str, pid: int, port: int, token: str = "ab" * 32) -> Path:
    path = registry.registry_dir() / f"{name}.json"
    path.write_text(json.dumps({
        "name": name, "url": f"http://127.0.0.1:{port}", "pid": pid, "owner_pid": os.getpid(),
        "model_data": "m", "created": time.time(), "token": token, "status": "InService"}))
    (path.parent / f"{name}.log").write_text("log\n")
    return path


def alive(proc: subprocess.Popen[bytes]) -> bool:
    """Running and never signalled. A signal is queued at its target by the time ``kill``
    returns, so where ``/proc`` shows the process: none pending (``SigPnd`` / ``ShdPnd``),
    not stopped, not exited. Elsewhere: a pause for a signal, had one been sent, to land."""
    time.sleep(0.02)
    status = Path(f"/proc/{proc.pid}/status")
    try:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
    except OSError:
        time.sleep(0.2)
        return proc.poll() is None
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return proc.poll() is None and pending == 0 and fields["State"].split()[0] in "RSD"


def predict(name: str) -> object:
    p = Predictor(name, serializer=CSVSerializer(), deserializer=JSONDeserializer())
    return p.predict(np.zeros((2, 4), np.float32))


class Answer(BaseHTTPRequestHandler):
    """Another program on a port an endpoint once had: /ping 200, with a wrong proof."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header(process.PID_HEADER, "0")
        self.send_header(process.PROOF_HEADER, "0" * 64)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


# --- names ---

@pytest.mark.parametrize("name", ["a", "A-9", "knn-2024-01-01-00-00-00-000", "a--b", "x" * 63])
def test_sagemaker_names_are_accepted(name: str) -> None:
    assert registry.check_name(name) == name


@pytest.mark.parametrize("name", ["../../x", "", "-a", "a-", "a_b", "a.b", "x" * 64, "a/b",
                                  "a\n", "é"])
def test_other_names_are_refused_naming_value_and_pattern(name: str) -> None:
    value = re.escape(repr(name))
    with pytest.raises(ClientError, match=rf"Value {value} at 'endpointName'.*{PATTERN}"):
        registry.check_name(name)


def test_path_names_write_nothing_and_signal_nothing(home: Path, model_tar: Path,
                                                     sleeper: subprocess.Popen[bytes]) -> None:
    victim = home.parent / "victim.json"  # ../../victim from the registry's point of view
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text(json.dumps({"name": "v", "url": "http://127.0.0.1:1", "pid": sleeper.pid,
                                  "owner_pid": 1, "model_data": "", "created": 0.0}))
    before = sorted(home.parent.parent.rglob("*"))
    with pytest.raises(ClientError, match=PATTERN):
        registry.create("../../x", str(model_tar))
    for op in (registry.delete, registry.describe):
        with pytest.raises(ClientError, match=PATTERN):
            op("../victim")
    r = openknn("endpoints", "delete", "../victim")
    assert r.returncode == 1 and "must satisfy regular expression pattern" in r.stderr
    assert alive(sleeper) and victim.exists()
    assert sorted(home.parent.parent.rglob("*")) == before  # nothing written anywhere


# --- identity ---

def test_a_reused_pid_is_never_signalled(home: Path, sleeper: subprocess.Popen[bytes]) -> None:
    entry = fake_entry("reused", sleeper.pid, process.free_port())
    assert registry.identify(registry._read(entry)) is registry.Identity.OTHER  # type: ignore[arg-type]
    assert registry.list_endpoints() == []
    assert alive(sleeper)
    assert not entry.exists() and not (home / "reused.log").exists()  # the log went with it
    fake_entry("reused", sleeper.pid, process.free_port())
    with pytest.raises(registry.EndpointNotFound, match=r"Could not find endpoint 'reused'"):
        registry.delete("reused")
    assert alive(sleeper) and list(home.glob("reused*")) == []
    r = openknn("endpoints", "list")
    assert r.returncode == 0 and alive(sleeper)


def test_without_proc_an_unprovable_pid_is_kept_and_not_signalled(
        home: Path, sleeper: subprocess.Popen[bytes], no_proc: None) -> None:
    entry = fake_entry("quiet", sleeper.pid, process.free_port())  # nothing answers there
    [info] = registry.list_endpoints()
    assert info.status == "Unverified" and entry.exists() and alive(sleeper)
    with pytest.raises(ClientError, match=rf"Cannot confirm that process {sleeper.pid} is "
                                          r"endpoint 'quiet'.*not signalled"):
        registry.delete("quiet")
    assert alive(sleeper) and entry.exists()
    sleeper.kill()
    sleeper.wait()
    assert registry.list_endpoints() == [] and not entry.exists()  # gone: removed


def test_without_proc_a_wrong_proof_removes_the_entry_only(
        home: Path, sleeper: subprocess.Popen[bytes], no_proc: None) -> None:
    other = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.01},
                     daemon=True).start()  # shutdown() waits up to one poll interval
    try:
        entry = fake_entry("taken", sleeper.pid, other.server_address[1])
        assert registry.list_endpoints() == []
        assert not entry.exists() and alive(sleeper)
    finally:
        other.shutdown()


def test_http_proxy_kills_nothing_and_predict_still_answers(
        model_tar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = registry.create("proxied", str(model_tar), threads=1)
    for name in PROXIES:
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # a dead proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert [i.name for i in registry.list_endpoints()] == ["proxied"]
    assert registry._answers(info, 5) is registry.Identity.LIVE  # /ping's proof, direct
    with monkeypatch.context() as m:
        m.setattr(registry, "_started_with", lambda pid, token: None)
        [listed] = registry.list_endpoints()
        assert listed.status == "InService"
    assert process.pid_alive(info.pid)
    assert len(predict("proxied")["predictions"]) == 2  # type: ignore[index]
    registry.delete("proxied")
    assert not process.pid_alive(info.pid)


def test_a_busy_endpoint_is_not_a_dead_one(model_tar: Path, home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    info = registry.create("busy", str(model_tar), threads=1)
    os.kill(info.pid, signal.SIGSTOP)  # alive, answers nothing
    try:
        assert [i.status for i in registry.list_endpoints()] == ["InService"]
        with monkeypatch.context() as m:  # where only /ping can tell: it times out
            m.setattr(registry, "_started_with", lambda pid, token: None)
            m.setattr(registry, "PING_TIMEOUT_S", 0.1)  # stopped: no answer ever comes
            [listed] = registry.list_endpoints()
            assert listed.status == "Unverified"
            with pytest.raises(registry.EndpointExists, match=EXISTS):
                registry.create("busy", str(model_tar))
        assert (home / "busy.json").exists() and process.pid_alive(info.pid)
    finally:
        os.kill(info.pid, signal.SIGCONT)
    assert len(predict("busy")["predictions"]) == 2  # type: ignore[index]
    registry.delete("busy")
    assert list(home.glob("busy*")) == []


def test_ping_proves_only_with_the_token() -> None:
    headers = process.identity("t" * 64)
    assert headers({}) == {} and headers({"x-openknn-challenge": "short"}) == {}
    answer = headers({"x-openknn-challenge": "c" * 32})
    assert answer[process.PID_HEADER] == str(os.getpid())
    assert answer[process.PROOF_HEADER] == process.proof("t" * 64, "c" * 32, os.getpid())
    assert answer[process.PROOF_HEADER] != process.proof("u" * 64, "c" * 32, os.getpid())


# --- creation, files ---

def test_concurrent_creates_of_one_name_give_one_error_and_one_server(model_tar: Path) -> None:
    barrier = threading.Barrier(2)
    results: list[object] = []

    def deploy() -> None:
        barrier.wait()
        try:
            results.append(registry.create("twin", str(model_tar), threads=1))
        except ClientError as exc:
            results.append(exc)

    threads = [threading.Thread(target=deploy) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], registry.EndpointExists)
    assert str(errors[0]).startswith('Cannot create already existing endpoint '
                                     '"arn:aws:sagemaker:local:000000000000:endpoint/twin".')
    assert len(serve_processes()) == 1  # the loser started nothing


def test_concurrent_creates_across_processes(model_tar: Path, home: Path) -> None:
    script = ("import sys, time\nfrom openknn.sdk import endpoints as r\n"
              "try:\n    r.create('twin', sys.argv[1], threads=1); print('ok', flush=True)\n"
              "except r.EndpointExists as e:\n    print(e, flush=True)\n"
              "sys.stdin.read()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(model_tar)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=os.environ.copy()) for _ in range(2)]
    try:
        lines = sorted(p.stdout.readline() for p in procs)  # type: ignore[union-attr]
        assert lines[0].startswith("Cannot create already existing endpoint") and \
            lines[1] == "ok\n", lines
        info = registry.describe("twin")
        assert [p.pid for p in procs].count(info.owner_pid) == 1
        assert len(serve_processes(info.owner_pid)) == 1
    finally:
        for p in procs:
            p.communicate("", timeout=60)
    deadline = time.monotonic() + 15  # its owner gone, the endpoint ends; its entry goes
    while registry.list_endpoints() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry.list_endpoints() == [] and list(home.glob("twin*")) == []


def serve_processes(owner: int | None = None) -> list[int]:
    """`openknn serve` processes deployed by ``owner`` (default: this process)."""
    mark = f"\0--owner-pid\0{owner or os.getpid()}\0".encode()
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and mark in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            pass
    return out


def test_a_live_reservation_blocks_and_a_dead_one_is_cleared(model_tar: Path,
                                                              home: Path) -> None:
    info = registry.EndpointInfo("held", "", 0, os.getpid(), "m", time.time(), "x", "Creating")
    fd = registry._reserve(registry._entry("held"), info)
    try:
        assert [(i.name, i.status) for i in registry.list_endpoints()] == [("held", "Creating")]
        with pytest.raises(registry.EndpointExists, match=EXISTS):
            registry.create("held", str(model_tar))
        with pytest.raises(ClientError, match=r"still being created"):
            registry.delete("held")
    finally:
        os.close(fd)  # as if its creator died
    assert registry.list_endpoints() == [] and not (home / "held.json").exists()


def test_files_are_private_whatever_the_umask(model_tar: Path, home: Path) -> None:
    home.mkdir(parents=True)
    home.chmod(0o755)  # made by an older openknn
    old = os.umask(0)
    try:
        registry.create("private", str(model_tar), threads=1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir()}
    assert modes == {"private.json": 0o600, "private.log": 0o600, ".lock": 0o600}
    registry.delete("private")
    assert [p.name for p in home.iterdir()] == [".lock"]  # the log went with its entry


def test_a_failed_start_leaves_nothing(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ClientError, match=r"exited before it was ready.*log ended"):
        registry.create("broken", str(bad))
    assert list(home.glob("broken*")) == [] and serve_processes() == []
