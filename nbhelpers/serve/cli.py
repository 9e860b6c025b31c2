"""`nbhelpers serve`: an OpenAI-compatible server for the profile's chat model, in the foreground until Ctrl-C."""

from __future__ import annotations

import shlex
import signal
import sys

from nbhelpers.checks import ParameterError


def _vllm_settings(args, profile):
    from nbhelpers import env
    from nbhelpers.serve import vllm_engine

    settings = profile.defaults["serve"]
    found = env.gpu()
    gpus = args.gpus or (found["count"] if found and args.nodes == 1 else settings["gpus"]) or 1
    gpu = args.gpu or settings["gpu"] or "t4"
    return vllm_engine.plan(args.model or settings["vllm_model"], gpu, gpus, args.nodes)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _serve(args) -> int:
    from nbhelpers import serve
    from nbhelpers.profiles import get_profile
    from nbhelpers.serve import ports, transformers_engine, vllm_engine

    profile = get_profile(args.profile)
    engine = serve.engine_for(profile, args.engine)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host} exposes the server, which has no authentication, to the network",
              file=sys.stderr)
    if engine == "vllm":
        if profile.device == "cpu":
            raise ParameterError("engine", "vllm", f"the {profile.name} profile runs on the CPU and vLLM needs NVIDIA "
                                                   "GPUs: use --engine transformers, or see vLLM's command with "
                                                   "--profile t4 or large and --print-command")
        settings = _vllm_settings(args, profile)
        steps = vllm_engine.steps(settings, args.host, args.port, args.head_address)
        if args.print_command:
            print(vllm_engine.format_steps(steps))
            return 0
        if settings["nodes"] > 1:
            print("several machines: run these steps yourself, in this order\n" + vllm_engine.format_steps(steps))
            return 0
        vllm_engine.check_runnable(settings)
        port = ports.check_free(args.host, args.port)
        server = serve.Server(vllm_engine.command(settings, args.host, port), f"http://{serve._url_host(args.host)}:"
                              f"{port}", transformers_engine.environment(profile))
        timeout = 1800  # downloading and loading tens of GB
    else:
        if args.print_command:
            port = args.port or ports.free_port(args.host)  # a concrete port, so the command can be run as printed
            print(shlex.join(transformers_engine.command(profile, args.host, port, args.continuous_batching)))
            return 0
        server = serve.transformers_server(profile, args.host, args.port, args.continuous_batching,
                                           log_path=serve.default_log())
        timeout = 600
    # Ctrl-C and SIGTERM both stop the server in order. Set explicitly: a process started in the background by a
    # shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"starting {engine} ({profile.name}): {shlex.join(server.command)}", flush=True)
    try:
        server.start(timeout)
        print(f"server process {server.process.pid}", flush=True)
        print(f"serving {server.model} at {server.url}  (OpenAI-compatible; Ctrl-C stops it)", flush=True)
        server.process.wait()
        print(f"the server exited with code {server.process.returncode}{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        code = server.stop()
        print(f"stopped (exit code {code})")
        return 0
    except serve.ServerError as error:
        print(f"nbhelpers serve: {error}", file=sys.stderr)
        return 1
    finally:
        server.stop()


def add_parser(subparsers) -> None:
    from nbhelpers.profiles import PROFILE_NAMES
    from nbhelpers.serve import ENGINES
    from nbhelpers.serve.vllm_engine import MODELS

    verb = subparsers.add_parser("serve", help="an OpenAI-compatible server for the profile's chat model")
    verb.add_argument("--profile", default="auto", help="one of " + ", ".join(PROFILE_NAMES) + " (default: auto)")
    verb.add_argument("--engine", default=None, choices=ENGINES,
                      help="transformers (default for tiny and t4) or vllm (default for large)")
    verb.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    verb.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    verb.add_argument("--print-command", action="store_true", help="print the engine's command and exit")
    verb.add_argument("--no-continuous-batching", dest="continuous_batching", action="store_false", default=None,
                      help="transformers: one generate() at a time instead of continuous batching")
    verb.add_argument("--model", default=None, help="vllm: one of " + ", ".join(MODELS) + " (default: the profile's)")
    verb.add_argument("--gpu", default=None, help="vllm: the GPU kind (t4, l4, a100-40, a100-80; default: profile)")
    verb.add_argument("--gpus", type=int, default=None, help="vllm: GPUs per machine (default: those found here, "
                                                             "else the profile's)")
    verb.add_argument("--nodes", type=int, default=1, help="vllm: machines (pipeline stages over Ray; default 1)")
    verb.add_argument("--head-address", default="HEAD_IP", help="vllm, several machines: the head machine's address")
    verb.set_defaults(handler=_serve)
