"""nbhelpers serve under tiny: a real `transformers serve` on a free local port, queried like an app would."""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from nbhelpers import serve
from nbhelpers.serve import ports
from nbhelpers.checks import ParameterError
from nbhelpers.loaders import resolve_source
from nbhelpers.profiles import get_profile

QUESTION = "What is the capital of Italy?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = serve.start("tiny", log_path=tmp_path_factory.mktemp("serve") / "server.log", timeout=600)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(server):
    return serve.load.client(server.url)


def _ask(api, server, content, **options):
    return api.chat.completions.create(model=server.model, messages=[{"role": "user", "content": content}],
                                       temperature=0, **options)


def _post(server, raw: bytes):
    request = urllib.request.Request(server.url + "/chat/completions", data=raw,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_models_lists_the_profiles_chat_model_on_localhost(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.models() == [resolve_source(get_profile("tiny").model("chat"))]


def test_chat_completion_and_its_streamed_twin_agree(api, server):
    reply = _ask(api, server, QUESTION, max_tokens=24)
    text = reply.choices[0].message.content
    assert text.strip() and 0 < reply.usage.completion_tokens <= 24
    chunks = [chunk.choices[0].delta.content for chunk in _ask(api, server, QUESTION, max_tokens=24, stream=True)
              if chunk.choices and chunk.choices[0].delta.content]
    assert len(chunks) > 1, "a streamed reply comes in pieces"
    assert "".join(chunks) == text  # greedy both times: the same tokens, only delivered differently


def _recall_prompt(tokenizer, seed: int = 0) -> tuple[str, str]:
    """A lab recall task (GUIDE section 3): filler, one passphrase sentence, then the question."""
    from nbhelpers.lab import tasks

    item = tasks.recall(random.Random(seed), 300, tasks.token_counter(tokenizer))
    return item.message, item.expected["word"]


def test_served_reply_to_a_recall_prompt_contains_the_passphrase(api, server):
    from transformers import AutoTokenizer

    from nbhelpers.loaders import resolve_source

    prompt, word = _recall_prompt(AutoTokenizer.from_pretrained(resolve_source(get_profile("tiny").model("chat"))))
    reply = _ask(api, server, prompt, max_tokens=16).choices[0].message.content
    assert word in reply, f"{word!r} not in {reply!r}"


def test_sixteen_concurrent_requests_all_succeed(api, server):
    result = serve.load.level(api, server.model, QUESTION, concurrency=16, requests=16, max_tokens=16)
    assert result["ok"] == 16 and result["failed"] == 0, result["errors"]
    assert result["completion_tokens"] >= 16 and result["latency_p95_s"] >= result["latency_p50_s"] > 0


@pytest.mark.parametrize("raw, blamed", [
    (b"not json", "JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "messages"),
    (b'{"messages": "hi"}', "messages"),
    (b'{"messages": [{"role": "robot", "content": "hi"}]}', "role"),
    (b'{"messages": [{"role": "user", "content": 3}]}', "content"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', "max_tokens"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}', "context length"),
    (b'{"messages": [{"role": "assistant", "content": "hi"}]}', "chat template"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "bogus": 1}', "bogus"),
])
def test_malformed_requests_get_a_4xx_with_a_message(server, raw, blamed):
    status, body = _post(server, raw)
    assert 400 <= status < 500, (status, body)
    assert blamed.lower() in body.decode().lower(), body


def test_the_openai_client_sees_a_bad_request_not_a_server_error(api, server):
    import openai

    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        _ask(api, server, QUESTION, max_tokens=0)


def test_a_busy_port_is_refused_by_name():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ParameterError, match=f"port={port}.*already in use"):
            serve.transformers_server("tiny", port=port)
        cli = subprocess.run([sys.executable, "-m", "nbhelpers", "serve", "--profile", "tiny", "--port", str(port)],
                             capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "already in use" in cli.stderr


def test_stop_ends_the_server_process_and_frees_the_port(server):
    pid, port = server.process.pid, int(server.base_url.rsplit(":", 1)[1])
    assert server.stop() == 0  # the launcher's clean exit after SIGINT, not a kill
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert ports.check_free("127.0.0.1", port) == port  # free for the next server at once


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_ctrl_c_stops_the_foreground_command():
    command = subprocess.Popen([sys.executable, "-m", "nbhelpers", "serve", "--profile", "tiny", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server_pid = None
    try:
        for line in command.stdout:
            if line.startswith("server process "):
                server_pid = int(line.split()[-1])
            if line.startswith("serving "):
                break
        url = re.search(r"at (http://\S+/v1)", line).group(1)
        with urllib.request.urlopen(url + "/models", timeout=10) as response:
            assert json.load(response)["data"]
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=120)
    finally:
        command.kill()
        if server_pid and _alive(server_pid):  # never leave a server behind, even when the test fails
            os.killpg(server_pid, signal.SIGKILL)
    assert command.returncode == 0 and "stopped (exit code 0)" in out, err
    assert not _alive(server_pid)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/models", timeout=5)
