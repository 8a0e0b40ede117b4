"""Log set-up shared by the CLI and the training workers it launches: one format with date and time
zone (driver, executor and scheduler logs line up), and libraries' chatter kept out."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
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


# spark-submit's own JVM fails before any of the project's code runs (an environment archive it
# cannot fetch, say) with an uncaught exception: a trace of 60+ lines on stderr and exit 1,
# whatever the cause. Which of those a scheduler should retry:
_TRANSIENT = ("java.net.ConnectException", "java.net.SocketTimeoutException", "java.net.NoRouteToHostException",
              "org.apache.hadoop.ipc.RetriableException", "org.apache.hadoop.ipc.StandbyException")
_UNCAUGHT = re.compile(r'^Exception in thread "main" (\S+?)(?::\s*(.*))?$')
# What the JVM itself prints on every start, and says nothing about this run (Spark 4 loads the
# incubating vector API).
_JVM_NOTICES = ("WARNING: Using incubator modules:",)


def run_spark_submit(command: list[str]) -> int:
    """Run spark-submit, its output passed through as it comes, except an uncaught exception of its
    own JVM: that goes to this run's Spark log, and the console gets one line with exit 2 for a
    setting to fix, 1 for what may pass (an unreachable name node). Signals reach spark-submit."""
    child = subprocess.Popen(command, stderr=subprocess.PIPE)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    trace: list[str] = []
    assert child.stderr is not None
    for raw in child.stderr:
        line = raw.decode(errors="replace")
        if trace or _UNCAUGHT.match(line.rstrip("\n")):
            trace.append(line)
        elif not line.startswith(_JVM_NOTICES):
            sys.stderr.write(line)
            sys.stderr.flush()
    code = child.wait()
    if not trace:
        return code
    name, message = _UNCAUGHT.match(trace[0].rstrip("\n")).groups()
    where = Path(os.environ.get(SPARK_LOG_ENV) or Path(os.environ.get("DEEPFM_LOG_DIR", "logs")) / "submit.log")
    where.parent.mkdir(parents=True, exist_ok=True)
    with where.open("a") as log:
        log.writelines(trace)
    transient = name in _TRANSIENT or any(t in "".join(trace) for t in _TRANSIENT if t.startswith("org."))
    what = "may pass: retry" if transient else "a setting to fix"
    sys.stderr.write(f"spark-submit.sh: error: spark-submit stopped before the stage started ({what}): "
                     f"{name.rsplit('.', 1)[-1]}: {(message or '').strip()} (the trace: {where})\n")
    return 1 if transient else 2


if __name__ == "__main__":
    sys.exit(run_spark_submit(sys.argv[1:]))
