"""Starting Spark: one place that turns SparkConfig into a SparkSession.

Precedence, highest first: what the launcher set (spark-submit's --master, --deploy-mode, --conf,
--name and resource flags), then the YAML `spark:` section. Under spark-submit the JVM exists before
this module runs, so the launcher's settings are read from that live JVM's SparkConf.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from deepfm import environment, logs
from deepfm.config import ConfigError, SparkConfig
from deepfm.errors import UserError

log = logging.getLogger(__name__)

# spark-submit names an application after its main file when --name is not given.
_SUBMIT_DEFAULT_APP_NAMES = ("cli.py",)


class JavaMissingError(UserError, RuntimeError):
    pass


def check_java() -> None:
    """Fail early, and say what to install, when Spark cannot start its JVM."""
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if "JAVA_HOME" in os.environ else None
    java = java if java and os.path.exists(java) else shutil.which("java")
    if java is None:
        raise JavaMissingError(
            "Java not found. Spark 3.5 needs Java 17: install openjdk-17-jre-headless "
            "(or set JAVA_HOME)."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    version = out.split('"')[1] if '"' in out else "unknown"
    major = version.split(".")[1] if version.startswith("1.") else version.split(".")[0]
    if not major.isdigit() or int(major) < 17:
        raise JavaMissingError(f"Java {version} at {java}; Spark 3.5 needs Java >= 17.")


class MasterUnreachableError(ConnectionError):
    """A master that does not accept connections (down, restarting): transient, exit 1."""


def check_master(master: str, wait_s: float = 60.0, timeout_s: float = 10.0) -> None:
    """A standalone master (`spark://h1:p1,h2:p2`) must accept a connection. One that refuses is
    waited for, with doubling pauses, up to `wait_s` (a master restarting comes back in seconds);
    a host that does not resolve is a setting to fix. Spark itself would retry for a minute and
    then fail with a stack trace."""
    if not master.startswith("spark://"):
        return
    addresses = master.removeprefix("spark://").split(",")
    deadline, pause = time.monotonic() + wait_s, 1.0
    while True:
        errors = []
        for address in addresses:
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=timeout_s):
                    return
            except socket.gaierror as err:
                raise ConfigError(f"Spark master {master}: the host {host!r} does not resolve ({err}): fix "
                                  "spark-submit's --master (SPARK_MASTER for spark-submit.sh) or spark.master"
                                  ) from None
            except ValueError:
                raise ConfigError(f"Spark master {master}: {address!r} is not HOST:PORT: fix spark-submit's --master "
                                  "(SPARK_MASTER for spark-submit.sh) or spark.master") from None
            except OSError as err:
                errors.append(f"{address}: {err}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MasterUnreachableError(
                f"Spark master {master} cannot be reached ({'; '.join(errors)}), waited {wait_s:g} s "
                "(spark.master_wait_s): start it, or fix spark-submit's --master (SPARK_MASTER for spark-submit.sh) "
                "or spark.master")
        pause = min(pause, remaining)
        log.warning("Spark master %s cannot be reached (%s); trying again in %.0f s", master, "; ".join(errors), pause)
        time.sleep(pause)
        pause = min(pause * 2, 15.0)


def launched_by_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ


def launcher_conf() -> dict[str, str]:
    """The spark.* properties the launcher passed to the JVM (empty outside spark-submit)."""
    if not launched_by_spark_submit():
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM; a SparkConf then reads its properties
    return dict(SparkConf().getAll())


def _refused_setting(text: str, cfg: SparkConfig, launched: dict[str, str]) -> ConfigError | None:
    """The setting whose value Spark refused to start with, named as the user set it."""
    if "Could not parse Master URL" in text:
        master = launched.get("spark.master", cfg.master)
        where = "spark-submit's --master" if "spark.master" in launched else "spark.master"
        return ConfigError(f"{where}: Spark cannot parse the master URL {master!r}: use local, local[N], local[*], "
                           "spark://HOST:PORT, yarn or k8s://HOST:PORT")
    missing = re.search(r"(?:NoSuchFileException|FileNotFoundException): (?:File )?(\S+?)(?: does not exist)?\.?$",
                        text, re.MULTILINE)
    if missing:  # a file spark-submit was told to ship (--archives, --files, --py-files, --jars)
        for key in ("spark.archives", "spark.files", "spark.submit.pyFiles", "spark.jars"):
            if missing.group(1) in launched.get(key, ""):
                hint = (": build the environment archive with 'make package', or name one with --ship-env=PATH"
                        if key == "spark.archives" else "")
                return ConfigError(f"spark-submit's {key}: {missing.group(1)} does not exist{hint}")
    for key, value in {**{k: str(v) for k, v in cfg.conf.items()}, **launched}.items():
        if found := re.search(rf"(?m)^.*\b{re.escape(key)}\b[^\n]*", text):
            where = f"spark-submit's --conf {key}" if key in launched else f"spark.conf.{key}"
            reason = found.group(0).split("Exception: ")[-1].strip()
            return ConfigError(f"{where}: Spark refused the value {value!r} ({reason})")
    return None


def app_name(cfg: SparkConfig, stage: str | None, run_date: str | None = None) -> str:
    """`deepfm-train-2026-11-28`: the Spark UI and the master list one line per stage and day."""
    return "-".join(p for p in (cfg.app_name, stage, run_date) if p)


def get_spark(cfg: SparkConfig, stage: str | None = None, run_date: str | None = None):
    """Build (or reuse) the SparkSession; YAML fills only what the launcher left unset."""
    check_java()
    from pyspark.sql import SparkSession

    launched = launcher_conf()
    if "spark.pyspark.python" not in launched:
        # Python workers (mapInArrow scoring, TorchDistributor) need this environment's packages.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    check_master(launched.get("spark.master", cfg.master), cfg.master_wait_s)
    builder = SparkSession.builder
    if launched.get("spark.app.name") in (None, *_SUBMIT_DEFAULT_APP_NAMES):
        builder = builder.appName(app_name(cfg, stage, run_date))
    if "spark.master" not in launched:
        builder = builder.master(cfg.master)
    for key, value in cfg.conf.items():
        if key not in launched:
            builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    if not launched and SparkSession.getActiveSession() is None:  # this process starts the driver's JVM
        own = str(cfg.conf.get("spark.driver.extraJavaOptions", ""))
        builder = builder.config("spark.driver.extraJavaOptions", f"{own} {logs.spark_java_options(stage)}".strip())
    if "spark.ui.showConsoleProgress" not in {**cfg.conf, **launched} and not sys.stderr.isatty():
        # Outside a terminal (spark-submit's log, an Airflow task log) the bar is lines of noise.
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    try:
        spark = builder.getOrCreate()
        # The session state is built on first use, and it is what checks the spark.sql.* values.
        spark.conf.get("spark.sql.shuffle.partitions")
    except Exception as err:
        refused = _refused_setting(str(err), cfg, launched)
        if refused is None:
            raise
        raise refused from None
    spark.sparkContext.setLogLevel(os.environ.get("DEEPFM_SPARK_LOG_LEVEL", "WARN"))
    conf = spark.sparkContext.getConf()
    log.info("Spark %s, master %s, app %s (%s), deploy mode %s, shuffle partitions %s", spark.version,
             spark.sparkContext.master, spark.sparkContext.appName, spark.sparkContext.applicationId,
             conf.get("spark.submit.deployMode", "client"), spark.conf.get("spark.sql.shuffle.partitions"))
    environment.check_executors(spark, cfg.executor_wait_s)
    return spark


def utf8_with_replacements(value):
    """A text column's bytes as valid UTF-8, each invalid sequence replaced by U+FFFD, on both Spark
    lines: Spark 4's `decode` raises on invalid input (spark.sql.legacy.codingErrorAction), and
    its `make_valid_utf8` does what Java's decoder did in 3.5."""
    from pyspark.sql import functions as F

    if hasattr(F, "make_valid_utf8"):
        return F.make_valid_utf8(value)
    return F.decode(value.cast("binary"), "UTF-8")


def try_cast(value, to: str):
    """`value` cast to `to`, NULL where it does not parse, on both Spark lines: Spark 4 runs with
    ANSI mode on by default, where a plain cast of a malformed string fails the job. (Spark 3.5,
    ANSI off by default, has no Column.try_cast; its plain cast gives NULL.)"""
    # On the class: a Column answers any attribute name itself (as a struct field).
    return value.try_cast(to) if hasattr(type(value), "try_cast") else value.cast(to)

