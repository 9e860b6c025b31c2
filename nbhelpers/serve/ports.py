"""Ports: a free one for tests and notebooks, and a clear refusal of a busy one."""

from __future__ import annotations

import socket

from nbhelpers import checks


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_free(host: str, port: int) -> int:
    """`port`, if a server can bind it on `host`; 0 picks a free one. A busy port raises ParameterError."""
    checks.integer("port", port, minimum=0, maximum=65535)
    if port == 0:
        return free_port(host)
    with socket.socket() as probe:
        # as uvicorn binds: connections of a server stopped a moment ago (TIME_WAIT) do not make the port busy
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise checks.ParameterError(
                "port", port, f"{host}:{port} is already in use ({error.strerror}): stop what listens there, "
                              "or pick another port (--port 0 picks a free one)") from None
    return port
