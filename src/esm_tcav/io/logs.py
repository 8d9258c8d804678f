"""Log files of the verbs that change data, including what was logged before the file existed.

Why: inputs are validated (and their sequence clean-ups logged) before anything is written, so
the log file cannot exist yet when the normalizations are noted. `LogCapture` keeps those
records; `log_to_file` writes them first, then everything that follows, to the verb's log file.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOGGER = "esm_tcav"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _LogFile(logging.FileHandler):
    """A log file that never turns a failed write (disk full) into a traceback on stderr: the
    verb's own write fails too and reports it in one line."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass


class LogCapture(logging.Handler):
    """Holds INFO and above records of the package until a log file takes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def close(self) -> None:
        logging.getLogger(LOGGER).removeHandler(self)
        super().close()


def start_capture() -> LogCapture:
    """Keep the package's INFO records from now on (the console still shows only its level)."""
    logger = logging.getLogger(LOGGER)
    capture = LogCapture()
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    return capture


def log_to_file(path: Path, capture: LogCapture | None = None) -> logging.Handler:
    """Append the package's log to `path` (a log: written line by line as the verb goes),
    starting with the records `capture` kept; returns the handler (reused if attached)."""
    path = Path(path)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve():
            handler = h
            break
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(path)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
    if capture is not None:
        for record in capture.records:
            handler.handle(record)
        capture.close()
    return handler


def detach(handler: logging.Handler) -> None:
    logging.getLogger(LOGGER).removeHandler(handler)
    handler.close()
