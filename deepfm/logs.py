"""Log set-up shared by the CLI and the training workers it launches: one format with date and time
zone (driver, executor and scheduler logs line up), and libraries' chatter kept out."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S%z"

# Libraries that log routine events on the root logger: Horovod's rendezvous server (every key it
# stores) and py4j (a retried, successful call, with a traceback attached).
_ROOT_LOGGER_CHATTER = ("/horovod/", "/py4j/")


def _not_library_chatter(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(part in record.pathname for part in _ROOT_LOGGER_CHATTER)


def configure(level: int | str = logging.INFO) -> None:
    logging.basicConfig(level=level, format=FORMAT, datefmt=DATE_FORMAT)
    root = logging.getLogger()
    if _not_library_chatter not in root.filters:
        root.addFilter(_not_library_chatter)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
