"""Stage loggers printed to stderr above any tqdm bar (shared by the extract and finetune commands).

Only the standard library at module level: command modules stay cheap to import.
"""

from __future__ import annotations

import logging
import sys


class _TqdmStderr(logging.Handler):
    _phonecli = True  # marks our handler, so a second call (tests, repeated commands) adds none

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)  # sys.stderr at emit time (CliRunner swaps it)


def log_to_stderr(logger_name: str, level: str) -> None:
    """Send ``logger_name``'s messages (level name, unknown -> INFO) to stderr via ``tqdm.write``."""
    logger = logging.getLogger(logger_name)
    logger.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    if any(getattr(h, "_phonecli", False) for h in logger.handlers):
        return
    handler = _TqdmStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
