"""A server in a child process: start it, wait until `/v1/models` answers, stop it as Ctrl-C would.

The child gets its own session, so interrupting a notebook cell or pressing Ctrl-C in the terminal reaches this
process only, which then stops the server in order (SIGINT, then SIGTERM, then SIGKILL if it will not go). Servers
still running when Python exits are stopped too, so a notebook kernel never leaves one holding a port.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class ServerError(RuntimeError):
    """The server exited or never answered; the message ends with the last lines of its log."""


class Server:
    def __init__(self, command: list[str], base_url: str, env: dict | None = None, log_path=None):
        self.command = [str(part) for part in command]
        self.base_url = base_url.rstrip("/")
        self.env = env
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._log = None
        self._model: str | None = None

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (what `openai.OpenAI(base_url=...)` wants)."""
        return self.base_url + "/v1"

    def start(self, timeout: float = 300) -> "Server":
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        atexit.register(self.stop)
        self.wait_ready(timeout)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def models(self) -> list[str]:
        with urllib.request.urlopen(self.url + "/models", timeout=5) as response:
            return [entry["id"] for entry in json.load(response)["data"]]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerError(f"the server exited with code {self.process.returncode} before answering"
                                  f"{self.log_tail()}")
            try:
                self._model = self.models()[0]
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                time.sleep(0.25)
        self.stop()
        raise ServerError(f"{self.url}/models did not answer within {timeout:.0f} s{self.log_tail()}")

    @property
    def model(self) -> str:
        """The id of the (first) model the server listed when it came up: what requests name in `model=`."""
        return self._model

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\nlast lines of " + str(self.log_path) + ":\n" + "\n".join(tail)

    def stop(self, grace: float = 20) -> int | None:
        """Stop the server (SIGINT, like Ctrl-C; then SIGTERM; then SIGKILL) and return its exit code."""
        process = self.process
        if process is None:
            return None
        atexit.unregister(self.stop)
        for signum, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, signum)  # the whole session: an engine's own workers go with it
            except ProcessLookupError:
                break
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if self._log:
            self._log.close()
            self._log = None
        return process.poll()

    def __enter__(self) -> "Server":
        return self if self.process else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
