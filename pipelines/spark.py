"""Starting Spark: one place that turns SparkConfig into a SparkSession."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

from deepfm.config import SparkConfig

log = logging.getLogger(__name__)


class JavaMissingError(RuntimeError):
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


def get_spark(cfg: SparkConfig):
    """Build (or reuse) the SparkSession.

    Under spark-submit the master and the submitted --conf values win: we only fill in what the
    launcher left unset, so the same job runs in local mode and on a cluster unchanged.
    """
    check_java()
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    launched = SparkConf()  # holds spark.* properties that spark-submit passed to the JVM
    if not launched.contains("spark.pyspark.python"):
        # Python workers (mapInArrow scoring, TorchDistributor) need this environment's packages.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(cfg.app_name)
    if not launched.contains("spark.master"):
        builder = builder.master(cfg.master)
    for key, value in cfg.conf.items():
        if not launched.contains(key):
            builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("DEEPFM_SPARK_LOG_LEVEL", "WARN"))
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark
