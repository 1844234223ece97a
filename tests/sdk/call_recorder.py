"""Run a Python script recording every AWS call its botocore clients make, as the SDK made
it: ``python tests/sdk/call_recorder.py CALLS SCRIPT [ARGS...]`` runs SCRIPT as ``__main__``
and writes to CALLS a JSON list of ``[seconds, service, operation, HTTP status, error code]``,
one per answered call, in order (a client created before the hook, or a call that got no
answer, is not in it). It changes nothing the SDK sends or reads; it chains with
``loopback_guard.py`` (``loopback_guard.py REPORT call_recorder.py CALLS SCRIPT ...``)."""

from __future__ import annotations

import atexit
import json
import runpy
import sys
import time
from typing import Any

import botocore.session

calls: list[list[Any]] = []


def _record() -> None:
    create_client = botocore.session.Session.create_client

    def recording(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = create_client(self, service_name, *args, **kwargs)

        def after_call(http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
            error = parsed.get("Error", {}) if isinstance(parsed, dict) else {}
            calls.append([round(time.time(), 3), service_name, model.name,
                          http_response.status_code, error.get("Code")])

        client.meta.events.register("after-call", after_call)
        return client

    botocore.session.Session.create_client = recording  # type: ignore[method-assign]


def main() -> None:
    report, script, *args = sys.argv[1:]

    def write() -> None:
        with open(report, "w") as f:
            json.dump(calls, f)

    atexit.register(write)
    _record()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
