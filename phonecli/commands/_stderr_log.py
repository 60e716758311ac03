"""The one logging setup of the command line (the library only logs through ``logging.getLogger("phonecli.*")``).

The root click group calls :func:`configure_logging` once per invocation: one handler on the
``phonecli`` logger, printing ``message`` lines to stderr above any tqdm bar. Records still
propagate (an application or pytest that configures the root logger sees them too); the CLI
itself configures nothing else, so nothing is printed twice.

Only the standard library at module level: command modules stay cheap to import.
"""

from __future__ import annotations

import logging
import os
import sys

LEVELS = ("debug", "info", "warning", "error")
#: commands that print one line per step themselves: their stages' INFO lines would drown them
QUIET_COMMANDS = {"quickstart": "warning", "run": "warning"}


class _TqdmStderr(logging.Handler):
    _phonecli = True  # marks our handler, so a second invocation (tests, repeated commands) adds none

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)  # sys.stderr at emit time (CliRunner swaps it)
            sys.stderr.flush()                                 # in order with stdout when both are captured
        except (OSError, ValueError):   # stderr closed or gone (a piped reader quit): logging must not crash
            self.handleError(record)


def resolve_level(level: str | None, command: str | None) -> str:
    """The level: the ``--log-level`` given (on every torchrun rank), else ``info`` (``warning`` for the
    pipeline commands), and only errors on torchrun ranks other than 0 (every rank sees the same data)."""
    if level:
        return level
    if int(os.environ.get("RANK", "0")) != 0:
        return "error"
    return QUIET_COMMANDS.get(command or "", "info")


def configure_logging(level: str) -> None:
    """Send the ``phonecli`` loggers' records at ``level`` and above to stderr, one plain line each."""
    logger = logging.getLogger("phonecli")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_phonecli", False) for h in logger.handlers):
        handler = _TqdmStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    # bitsandbytes' CPU backend warns on import that the optional `kernels` package is absent; the
    # fallback it uses is the tested one, so the line is noise for users of the commands
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
