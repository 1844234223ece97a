"""Run a Python script with every network call held to this machine: a connect to an address
that is not loopback, or a name lookup of a host that is not local, is recorded and refused.
``python tests/sdk/loopback_guard.py REPORT SCRIPT [ARGS...]`` runs SCRIPT as ``__main__``
and writes the refused calls to REPORT as a JSON list (empty: nothing left the machine), so a
test fails on any request the SDK or boto3 sends past the local service, even one they retry
or swallow."""

from __future__ import annotations

import atexit
import ipaddress
import json
import runpy
import socket
import sys
from typing import Any

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1", "")
refused: list[str] = []


def _is_local(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str) or host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard() -> None:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            refused.append(f"connect {address[0]}:{address[1]}")
            raise ConnectionRefusedError(f"loopback guard: {address[0]} is not this machine")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(host):
            refused.append(f"resolve {host}")
            raise socket.gaierror(socket.EAI_NONAME, f"loopback guard: {host} is not local")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo


def main() -> None:
    report, script, *args = sys.argv[1:]

    def write() -> None:
        with open(report, "w") as f:
            json.dump(refused, f)

    atexit.register(write)
    _guard()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
