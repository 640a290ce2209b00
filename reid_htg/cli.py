"""How every tool in ``tools/`` ends: one line for a user's mistake, a traceback only with ``--debug``.

Exit codes: 0 done; 2 bad input (a config, a path, a file, a value: every
library error is a ``ValueError`` subclass that names the problem and the
fix, and a tool's own ``SystemExit("error: ...")``; a full or read-only disk); 1 a run that failed for
any other reason (a traceback: that is a bug or a broken machine, not the
user's input); 130 interrupted.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable


def run_tool(main: Callable[[], int | None]) -> int:
    """Run a tool's ``main()`` under the rule above; ``--debug`` anywhere on the command line shows tracebacks."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        return int(main() or 0)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a tool's own one-line refusal
            print(exc.code, file=sys.stderr)
            return 2
        raise
    except ModuleNotFoundError as exc:
        from reid_htg.utils.extras import missing_extra

        message = missing_extra(exc, f"{os.path.basename(sys.argv[0]) or 'this command'}")
        if debug or message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        if debug:
            raise
        print(f"error: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 2
    except OSError as exc:
        if debug or exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror}{where}: free space or choose another folder; what was there before is kept "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts (``--batch-size``, ``--k``, ``--max-rank``): a whole number >= 1, else argparse's one-line error."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value
