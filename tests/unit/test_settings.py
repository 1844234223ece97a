"""Serving settings from the environment: the connection limits and timeouts, their
defaults, and a clear error for a value that is not a number above zero."""

from __future__ import annotations

import pytest

from openknn import settings
from openknn.errors import ClientError
from openknn.serving import connections


def test_limit_defaults_keep_keep_alive_and_allow_hundreds_of_connections() -> None:
    s = settings.from_env({})
    assert (s.max_connections, s.max_header_kb, s.header_timeout_s, s.body_timeout_s,
            s.keep_alive_s) == (512, 16, 5.0, 30.0, 5)


def test_limits_from_the_environment_and_into_uvicorn() -> None:
    s = settings.from_env({settings.MAX_CONNECTIONS: "50", settings.MAX_HEADER_KB: "8",
                           settings.HEADER_TIMEOUT_S: "1.5", settings.BODY_TIMEOUT_S: "2",
                           settings.KEEP_ALIVE_S: "9"})
    options = connections.uvicorn_options(s)
    limits = options["http"].limits
    assert limits == connections.Limits(connections.connection_cap(50), 8192, 1.5)
    assert options["timeout_keep_alive"] == 9 and s.body_timeout_s == 2.0
    assert options["h11_max_incomplete_event_size"] == 8192
    assert issubclass(options["http"], connections.LimitedHttpToolsProtocol)


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "soon"])
def test_a_limit_must_be_a_number_above_zero(raw: str) -> None:
    with pytest.raises(ClientError, match=rf"OPENKNN_HEADER_TIMEOUT_S={raw!r}"):
        settings.from_env({settings.HEADER_TIMEOUT_S: raw})
