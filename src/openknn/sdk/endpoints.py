"""Local endpoints: `openknn serve` processes on free loopback ports, recorded in a registry
directory so any process (or `openknn endpoints`) can list and delete them by name.

An endpoint watches the process that deployed it and exits when that owner dies, so none
outlives a crashed notebook; the registry entry it leaves is detected as stale and removed.

Trust: each endpoint is started with a secret token in its environment (``ENDPOINT_TOKEN``),
kept in its entry. A process is that endpoint only if it was started with that token (read
from ``/proc/PID/environ``; elsewhere, its ``/ping`` answers a fresh challenge with an HMAC of
the token, asked with proxies off). An entry is removed only when its process is gone or
provably another, and then nothing is signalled; a busy endpoint is never taken for a dead
one. Names follow SageMaker's pattern, creation is atomic (a hard link of a locked
reservation, which fails if the name exists), and every file is 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import hmac
import json
import os
import re
import secrets
import select
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from ..errors import ClientError
from ..jobs.outputs import atomic_file
from ..serving import process
from ..serving.process import CHALLENGE_HEADER, PID_HEADER, PROOF_HEADER, pid_alive, proof
from ..settings import ENDPOINT_TOKEN
from ..settings import HOME as REGISTRY_ENV

READY_TIMEOUT_S = 120.0
PING_TIMEOUT_S = 2.0  # only where the process cannot be checked directly
NAME_PATTERN = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"  # SageMaker's EndpointName
ARN_PREFIX = "arn:aws:sagemaker:local:000000000000:endpoint/"
CREATING, IN_SERVICE, UNVERIFIED = "Creating", "InService", "Unverified"
LOCK_FILE = ".lock"
PROC = Path("/proc")
_NAME = re.compile(NAME_PATTERN)
_URL = re.compile(r"http://127\.0\.0\.1:[0-9]{1,5}")


class EndpointNotFound(ClientError, LookupError):
    """No live endpoint of that name (never created, deleted, or its process died)."""


class EndpointExists(ClientError, ValueError):
    """An endpoint of that name is being created or serving."""


class Identity(enum.Enum):
    """What an entry's process is: that endpoint, gone, provably another, or unknowable now."""

    LIVE = "live"
    GONE = "gone"
    OTHER = "other"
    UNKNOWN = "unknown"


@dataclass
class EndpointInfo:
    """One registry entry (``pid`` 0 and ``url`` empty while it is being created)."""

    name: str
    url: str
    pid: int
    owner_pid: int
    model_data: str
    created: float
    token: str = field(default="", repr=False)
    status: str = IN_SERVICE

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def check_name(name: object) -> str:
    """``name`` if it is a valid SageMaker endpoint name, else ClientError (as SageMaker's)."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    raise ClientError(f"1 validation error detected: Value {name!r} at 'endpointName' failed "
                      "to satisfy constraint: Member must satisfy regular expression pattern: "
                      f"{NAME_PATTERN}")


def client(timeout: float) -> httpx.Client:
    """An HTTP client for registry URLs, which are always loopback: proxy variables
    (``HTTP_PROXY``, ``ALL_PROXY``, …) are ignored, so a proxy never sits in between."""
    return httpx.Client(timeout=timeout, trust_env=False)


def registry_dir() -> Path:
    """``$OPENKNN_HOME/endpoints`` (default ``~/.openknn/endpoints``), mode 0700, ours."""
    home = os.environ.get(REGISTRY_ENV) or str(Path.home() / ".openknn")
    path = Path(home) / "endpoints"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise ClientError(f"The endpoint registry {path} is not a directory of this user's; "
                          f"set {REGISTRY_ENV} to a directory of your own")
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)
    return path


def _entry(name: str) -> Path:
    name = check_name(name)  # before anything is touched
    return registry_dir() / f"{name}.json"


def _log(name: str) -> Path:
    name = check_name(name)
    return registry_dir() / f"{name}.log"


def _not_found(name: str) -> EndpointNotFound:
    return EndpointNotFound(f"Could not find endpoint {name!r}: it was deleted or its process "
                            "ended; deploy the model again")


def _exists(name: str) -> EndpointExists:
    return EndpointExists(f'Cannot create already existing endpoint "{ARN_PREFIX}'
                          f'{name.lower()}". Delete it first (openknn endpoints delete {name}) '
                          "or choose another endpoint_name")


# --- files: private, written whole, removed under the registry lock ---

def _private_file(path: Path, data: bytes = b"") -> None:
    """Create ``path`` (never through a link), mode 0600, holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _temporary(directory: Path, name: str) -> Path:
    """A fresh name beside the entries that ``*.json`` never matches."""
    return directory / f".{name}.{secrets.token_hex(4)}.tmp"


def _write_entry(path: Path, info: EndpointInfo) -> None:
    """Replace ``path`` by ``info`` whole (a reader sees the old entry or the new one), through
    the jobs layer's one atomic write, mode 0600. (``_reserve`` differs: a locked file
    hard-linked into place, failing if the name exists.)"""
    with atomic_file(path, mode=0o600) as f:
        f.write(json.dumps(asdict(info)).encode())


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    """Serialises removals and reservations across processes (held for milliseconds)."""
    path = registry_dir() / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_raw(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 16)


def _parse(raw: bytes | None, name: str) -> EndpointInfo | None:
    """The entry, or None for anything openknn did not write (wrong types, other names)."""
    try:
        info = EndpointInfo(**json.loads(raw if raw is not None else b"null"))
    except (ValueError, TypeError):
        return None
    typed = (isinstance(info.name, str) and isinstance(info.url, str)
             and all(type(v) is int for v in (info.pid, info.owner_pid))
             and isinstance(info.token, str) and isinstance(info.status, str))
    if not typed or info.name != name:
        return None
    if info.status != CREATING and not (_URL.fullmatch(info.url) and info.pid > 0):
        return None
    return info


def _read(path: Path) -> EndpointInfo | None:
    return _parse(_read_raw(path), path.stem)


def _forget(name: str, raw: bytes | None) -> bool:
    """Remove the entry (and its log) if it still holds ``raw`` (None: whatever it holds)."""
    path = _entry(name)
    with _registry_lock():
        if raw is not None and _read_raw(path) != raw:
            return False  # replaced meanwhile: not the entry that was judged
        _log(name).unlink(missing_ok=True)  # the log first: a new entry's log comes after it
        path.unlink(missing_ok=True)
    return True


def _held(path: Path) -> bool:
    """Whether the process creating this reservation still runs (it holds a lock on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# --- identity: is the entry's process that endpoint? ---

def _started_with(pid: int, token: str) -> bool | None:
    """Whether process ``pid`` was started with ``token`` in its environment; None where that
    cannot be read (no ``/proc``, no token, or the kernel refuses one of our own processes)."""
    if not token or not (PROC / "self" / "environ").exists():
        return None
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False  # gone
    except PermissionError:
        try:
            mine = (PROC / str(pid)).stat().st_uid == os.geteuid()
        except OSError:
            return False
        return None if mine else False  # another user's process is no endpoint of ours
    except OSError:
        return None
    return f"{ENDPOINT_TOKEN}={token}".encode() in environ.split(b"\0")


def _answers(info: EndpointInfo, timeout: float) -> Identity:
    """Ask ``/ping`` (proxies off) to prove it holds the token; a silent endpoint is busy or
    starting, never taken for a dead one."""
    challenge = secrets.token_hex(16)
    try:
        with client(timeout) as c:
            r = c.get(f"{info.url}/ping", headers={CHALLENGE_HEADER: challenge})
    except httpx.HTTPError:
        return Identity.UNKNOWN
    got = r.headers.get(PROOF_HEADER)
    if got is None:
        return Identity.UNKNOWN  # not an endpoint that proves itself (e.g. Ray replicas)
    expected = proof(info.token, challenge, info.pid)
    ok = r.headers.get(PID_HEADER) == str(info.pid) and hmac.compare_digest(got, expected)
    return Identity.LIVE if ok else Identity.OTHER  # another endpoint holds the port


def identify(info: EndpointInfo, ask: bool = True) -> Identity:
    """What ``info.pid`` is now; ``ask``: over HTTP where the process cannot be checked."""
    if info.pid <= 0 or not pid_alive(info.pid):
        return Identity.GONE
    started = _started_with(info.pid, info.token)
    if started is not None:
        return Identity.LIVE if started else Identity.OTHER
    if not ask or not info.token:
        return Identity.UNKNOWN
    return _answers(info, PING_TIMEOUT_S)


# --- the registry's operations ---

def list_endpoints() -> list[EndpointInfo]:
    """Endpoints being created or serving (``status`` says which; ``Unverified`` where the
    process can be neither confirmed nor ruled out). Entries whose process is gone or
    provably another are removed; no process is ever signalled here."""
    out = []
    for path in sorted(registry_dir().glob("*.json")):
        if not _NAME.fullmatch(path.stem):
            continue  # not an entry openknn wrote
        raw = _read_raw(path)
        info = _parse(raw, path.stem)
        if info is not None and info.status == CREATING:
            if _held(path):
                out.append(info)
            else:
                _forget(info.name, raw)  # its creator died before the endpoint was ready
            continue
        who = identify(info) if info is not None else Identity.OTHER
        if who in (Identity.GONE, Identity.OTHER):
            _forget(path.stem, raw)
            continue
        assert info is not None
        info.status = IN_SERVICE if who is Identity.LIVE else UNVERIFIED
        out.append(info)
    return out


def _current(name: str) -> tuple[bytes, EndpointInfo]:
    """The entry of a created endpoint: ClientError while it is being created,
    EndpointNotFound (a stale entry is removed) where there is none."""
    path = _entry(name)
    raw = _read_raw(path)
    info = _parse(raw, name)
    if info is not None and info.status == CREATING:
        if _held(path):
            raise ClientError(f"Endpoint {name!r} is still being created; retry once deploy() "
                              "has returned")
        info = None
    if raw is None or info is None:
        if raw is not None:
            _forget(name, raw)
        raise _not_found(name)
    return raw, info


def describe(name: str) -> EndpointInfo:
    """The endpoint called ``name``, or EndpointNotFound (a stale entry is removed)."""
    raw, info = _current(name)
    if identify(info, ask=False) in (Identity.GONE, Identity.OTHER):
        _forget(name, raw)
        raise _not_found(name)
    return info


def _reserve(path: Path, info: EndpointInfo) -> int:
    """Claim ``path`` for ``info`` atomically: a locked file hard-linked into place, which
    fails if the name exists. Returns the descriptor that holds the lock."""
    tmp = _temporary(path.parent, info.name)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(asdict(info)).encode())
        fcntl.flock(fd, fcntl.LOCK_EX)
        with _registry_lock():
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not _stale(path):
                    raise _exists(info.name) from None
                _log(info.name).unlink(missing_ok=True)
                path.unlink()
                os.link(tmp, path)
    except BaseException:
        os.close(fd)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return fd


def _stale(path: Path) -> bool:
    """Whether an existing entry may be replaced: unreadable, its creator gone, or its
    process gone or provably another."""
    info = _read(path)
    if info is None:
        return True
    if info.status == CREATING:
        return not _held(path)
    return identify(info) in (Identity.GONE, Identity.OTHER)


def create(name: str, model_data: str, threads: int | None = None,
           replicas: int = 1, gpus: int | str | None = None) -> EndpointInfo:
    """Start ``openknn serve`` for ``model_data`` (``replicas`` > 1: Ray Serve replicas) and
    wait until ``/ping`` answers 200. A second create of one name fails at once."""
    path = _entry(name)
    token = secrets.token_hex(32)
    info = EndpointInfo(name, "", 0, os.getpid(), str(model_data), time.time(), token,
                        CREATING)
    lock = _reserve(path, info)
    proc = None
    try:
        log = _log(name)
        log.unlink(missing_ok=True)
        _private_file(log)
        args = [str(model_data), "--owner-pid", str(os.getpid())]
        if threads:
            args += ["--threads", str(threads)]
        if replicas > 1:
            args += ["--replicas", str(replicas)]
        if gpus is not None:
            args += ["--gpus", str(gpus)]
        port = process.free_port()
        # A session of its own: the endpoint outlives a Ctrl-C in the notebook, not its owner.
        proc = process.start(args, port, log, new_session=True,
                             env={**os.environ, ENDPOINT_TOKEN: token})
        info.url, info.pid = f"http://127.0.0.1:{port}", proc.pid
        _wait_ready(info, proc, log)
        info.status = IN_SERVICE
        _write_entry(path, info)
    except BaseException:
        if proc is not None:
            process.stop(proc)
        _forget(name, None)
        raise
    finally:
        os.close(lock)
    return info


def _wait_ready(info: EndpointInfo, proc: subprocess.Popen[bytes], log: Path) -> None:
    """``process.wait_ready``, its error carrying the log's end (the log goes with the entry)."""
    try:
        process.wait_ready(info.url, proc, log, READY_TIMEOUT_S)
    except ClientError as exc:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise ClientError(f"{exc}. The endpoint's log ended: {' | '.join(tail)}") from None


def delete(name: str) -> None:
    """Stop the endpoint's process, free its port and remove its entry and log. A process
    that cannot be shown to be the endpoint is never signalled."""
    raw, info = _current(name)
    handle = _pidfd(info.pid)  # opened first: the process checked is the one signalled
    try:
        who = identify(info)
        if who in (Identity.GONE, Identity.OTHER):
            _forget(name, raw)
            raise _not_found(name)
        if who is Identity.UNKNOWN:
            raise ClientError(f"Cannot confirm that process {info.pid} is endpoint {name!r} "
                              "(it does not prove it holds the endpoint's token), so it was not "
                              f"signalled; if it is, stop it yourself (kill {info.pid}) and "
                              "its entry goes with it")
        _terminate(info.pid, handle)
    finally:
        if handle is not None:
            os.close(handle)
    _forget(name, raw)


def _pidfd(pid: int) -> int | None:
    """A descriptor naming this very process (Linux pidfd), so a PID reused later is never
    signalled; None where the OS has none."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or pid <= 0:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _signal(pid: int, handle: int | None, sig: int) -> None:
    try:
        if handle is not None:
            signal.pidfd_send_signal(handle, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _exited(pid: int, handle: int | None, timeout: float) -> bool:
    """Wait up to ``timeout`` for the process to end (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            if handle is not None:
                if select.select([handle], [], [], 0)[0]:
                    return True
            elif not pid_alive(pid):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _terminate(pid: int, handle: int | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    _signal(pid, handle, signal.SIGTERM)
    if not _exited(pid, handle, timeout):
        _signal(pid, handle, signal.SIGKILL)
        _exited(pid, handle, 5.0)
