"""`python -m nbhelpers.serve.launch MODEL [options]`: `transformers serve` pinned to one model, with two changes.

1. `RequestGuard` (nbhelpers.serve.guard) sits in front of the engine's FastAPI app, so malformed requests and
   prompts longer than the model's context get a 400 with a message instead of a bare 500.
2. Ctrl-C (SIGINT) and SIGTERM stop it for good. With `--continuous-batching` transformers keeps a non-daemon
   worker thread that outlives uvicorn, so a plain `transformers serve` hangs after "Shutting down"; here the
   engine's own `kill_server()` stops that worker and the process then exits.

Everything else is `transformers.cli.serve.Serve` as the `transformers serve` command builds it (same options,
same endpoints). This is what `nbhelpers serve --engine transformers` runs in a child process.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def _prompt_check(model: str):
    """A check that applies the chat template and compares the prompt's length with the model's context."""
    from jinja2 import TemplateError
    from transformers import AutoConfig, AutoTokenizer

    from nbhelpers.serve.guard import RequestError

    tokenizer = AutoTokenizer.from_pretrained(model)
    limit = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)

    def text(content) -> str:
        if isinstance(content, list):  # OpenAI content parts: only the text ones reach a language model
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content or ""

    def check(body: dict) -> None:
        messages = [{"role": m["role"], "content": text(m.get("content"))} for m in body["messages"]]
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except TemplateError as error:
            raise RequestError("messages", f"the model's chat template refused these messages: {error}") from None
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        wanted = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        if limit and len(ids) + wanted > limit:
            raise RequestError("messages", f"this model's maximum context length is {limit} tokens; the prompt has "
                                           f"{len(ids)} tokens and max_tokens asks for {wanted} more")

    return check


def _install_guard(prompt_check) -> None:
    """Wrap transformers' app factory so the guard is the outermost middleware of the app it builds."""
    try:
        from transformers.cli.serving import server
    except ImportError:
        sys.exit("nbhelpers serve needs transformers >= 5.15 (transformers.cli.serving) and its serving extras: "
                 "pip install 'nbhelpers[serve]'")
    from nbhelpers.serve.guard import RequestGuard

    build = server.build_server

    def build_guarded(*args, **kwargs):
        app = build(*args, **kwargs)
        app.add_middleware(RequestGuard, prompt_check=prompt_check)
        return app

    server.build_server = build_guarded  # Serve imports it from this module when it is constructed


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m nbhelpers.serve.launch", description=__doc__.splitlines()[0])
    top.add_argument("model", help="local folder or Hub id of a chat model")
    top.add_argument("--host", default="127.0.0.1")
    top.add_argument("--port", type=int, default=8000)
    top.add_argument("--device", default="auto")
    top.add_argument("--dtype", default="auto")
    top.add_argument("--continuous-batching", action="store_true")
    top.add_argument("--cb-num-blocks", type=int, default=None)
    top.add_argument("--cb-max-batch-tokens", type=int, default=None)
    top.add_argument("--log-level", default="warning")
    return top


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    _install_guard(_prompt_check(args.model))
    from transformers.cli.serve import Serve

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # non_blocking: uvicorn runs in a thread, so this (main) thread owns the signals and the shutdown order
    serve = Serve(force_model=args.model, continuous_batching=args.continuous_batching, device=args.device,
                  dtype=args.dtype, host=args.host, port=args.port, cb_num_blocks=args.cb_num_blocks,
                  cb_max_batch_tokens=args.cb_max_batch_tokens, log_level=args.log_level, non_blocking=True)
    while not stop.wait(0.5):
        if not serve._thread.is_alive():  # uvicorn gave up (e.g. the port was taken in the meantime)
            break
    print("nbhelpers serve: stopping", file=sys.stderr, flush=True)
    serve.kill_server()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every request has ended and the engine's workers are stopped; a thread some library left behind must not
    # keep the process (and the port) alive.
    os._exit(0 if stop.is_set() else 1)


if __name__ == "__main__":
    main()
