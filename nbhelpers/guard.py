"""How every command-line verb ends: a user's mistake is one line and exit 2, Ctrl-C one line and exit 130.

Shared by `nbhelpers` and `python -m nbhelpers.train` (which must not import the whole command line).
"""

from __future__ import annotations

import os
import sys
import traceback

from nbhelpers.checks import ParameterError

DEBUG_ENV = "NBHELPERS_DEBUG"  # set to 1 (or pass --debug) to see the traceback behind a one-line error
INTERRUPTED = 130  # what a shell reports for a command stopped by Ctrl-C (128 + SIGINT)


def guarded(prog: str, handler, args, debug: bool = False) -> int:
    """Run a verb. A user's mistake (ParameterError) is one line on stderr and exit 2; Ctrl-C is one line and exit
    130. Tracebacks are for bugs: they show for anything else, and for these two with --debug or NBHELPERS_DEBUG=1."""
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        return handler(args)
    except ParameterError as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
