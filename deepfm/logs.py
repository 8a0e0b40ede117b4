"""Log set-up shared by the CLI and the training workers it launches: one format with date and time
zone (driver, executor and scheduler logs line up), and libraries' chatter kept out."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

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


# Spark's driver log: deepfm/conf/spark-log4j2.properties sends all of it to one file per run and
# keeps stack traces, and the tasks' failure reports, off the console.
SPARK_LOG4J2 = Path(__file__).with_name("conf") / "spark-log4j2.properties"
SPARK_LOG_ENV = "DEEPFM_SPARK_LOG"  # the file; spark-submit.sh chooses it for the JVM it starts


def spark_java_options(stage: str | None) -> str:
    """Driver JVM options that send Spark's log to this run's file (chosen once, then kept in the
    environment, where the error line and the processes this one starts find it)."""
    if not os.environ.get(SPARK_LOG_ENV):
        directory = Path(os.environ.get("DEEPFM_LOG_DIR", "logs")).absolute()
        name = f"{stage or 'spark'}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.spark.log"
        os.environ[SPARK_LOG_ENV] = str(directory / name)
    return f'"-Dlog4j2.configurationFile={SPARK_LOG4J2}" "-Ddeepfm.spark.log={os.environ[SPARK_LOG_ENV]}"'


def written_spark_log() -> Path | None:
    """This run's Spark log file, once Spark has written to it."""
    chosen = os.environ.get(SPARK_LOG_ENV)
    path = Path(chosen) if chosen else None
    return path if path is not None and path.is_file() and path.stat().st_size > 0 else None
