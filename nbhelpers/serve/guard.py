"""Request checks in front of `transformers serve`: a malformed request gets a 400 that says what is wrong.

`transformers serve` hands the request body to its handlers unchecked, so `{"messages": "hi"}`, a negative
`max_tokens` or a role the chat template refuses end in "500 Internal Server Error" with no message. An API that
learners build apps on must blame the request, not itself, and say which field to fix (OpenAI's error shape, so the
`openai` client raises `BadRequestError` with the message). The same goes for a prompt longer than the model's
context, which vLLM also answers with a 400.

This is plain ASGI (no FastAPI import), so it wraps whatever app the engine builds.
"""

from __future__ import annotations

import json
import numbers

CHAT_PATH = "/v1/chat/completions"
ROLES = ("system", "developer", "user", "assistant", "tool")


class RequestError(ValueError):
    def __init__(self, param: str | None, message: str):
        self.param = param
        super().__init__(message)


def _number(body: dict, name: str, low: float, high: float, *, integer: bool = False, low_open: bool = False):
    value = body.get(name)
    if value is None:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise RequestError(name, f"`{name}` must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < low or value > high or (low_open and value == low):
        raise RequestError(name, f"`{name}` must be {'>' if low_open else '>='} {low} and <= {high}, got {value!r}")


def _messages(messages) -> None:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "`messages` must be a non-empty list of {\"role\": ..., \"content\": ...}")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError("messages", f"`{where}` must be an object with `role` and `content`")
        if message.get("role") not in ROLES:
            raise RequestError("messages", f"`{where}.role` must be one of {', '.join(ROLES)}, "
                                           f"got {message.get('role')!r}")
        content = message.get("content")
        if not isinstance(content, (str, list)) and not (content is None and message.get("tool_calls")):
            raise RequestError("messages", f"`{where}.content` must be a string or a list of content parts")


def check_chat_request(body) -> None:
    """Raise RequestError naming the first bad field of an OpenAI chat-completions request body."""
    if not isinstance(body, dict):
        raise RequestError(None, "the request body must be a JSON object")
    _messages(body.get("messages"))
    for name in ("max_tokens", "max_completion_tokens"):
        _number(body, name, 1, 1_000_000, integer=True)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1, low_open=True)
    _number(body, "n", 1, 1, integer=True)  # the engine returns one choice; more would be silently dropped
    _number(body, "seed", 0, 2**63 - 1, integer=True)
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestError("stream", f"`stream` must be true or false, got {body['stream']!r}")
    if "model" in body and not isinstance(body["model"], str):
        raise RequestError("model", f"`model` must be a string, got {body['model']!r}")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise RequestError("stop", "`stop` must be a string or a list of strings")


def error_body(message: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                 "code": None}}).encode()


class RequestGuard:
    """ASGI middleware: check chat-completion bodies before the engine sees them.

    `prompt_check(body)` (optional) may raise RequestError too: the launcher uses it to apply the chat template
    and compare the prompt's length with the model's context.
    """

    def __init__(self, app, prompt_check=None):
        self.app = app
        self.prompt_check = prompt_check

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != CHAT_PATH:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:  # read the whole body once, then replay it to the engine
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            try:
                body = json.loads(raw)
            except ValueError as error:
                raise RequestError(None, f"the request body is not valid JSON: {error}") from None
            check_chat_request(body)
            if self.prompt_check is not None:
                self.prompt_check(body)
        except RequestError as error:
            return await _reply(send, 400, error_body(str(error), error.param))

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
