#!/usr/bin/env bash
# Run a pipeline stage through spark-submit:
#   ./spark-submit.sh [--ship-env[=ARCHIVE] | --worker-env=DIR] [--dry-run] STAGE [--conf FILE ...] [--set k=v ...]
# spark-submit's settings (--master, --deploy-mode, --conf, resources) win over the YAML `spark:` section.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")" && pwd)

usage() {
  cat >&2 <<EOF
usage: $0 [--ship-env[=ARCHIVE] | --worker-env=DIR] [--dry-run] STAGE [stage options]   (stages: deepfm-pipeline --help)
  --ship-env[=ARCHIVE]  ship the packed environment to the executors (default ARCHIVE:
                        dist/deepfm-env.tar.gz, built by 'make package'); also DEEPFM_SHIP_ENV=1 or =ARCHIVE
  --worker-env=DIR      run the environment installed on every worker at DIR (by install_worker_env.sh,
                        e.g. DIR=/opt/deepfm/current): nothing shipped or unpacked; also DEEPFM_WORKER_ENV=DIR
  --dry-run             print the resolved spark-submit command and exit
env: SPARK_MASTER (default local[*]), SPARK_DEPLOY_MODE (client or cluster; default client),
     SPARK_DRIVER_MEMORY (default 4g), SPARK_SUBMIT_ARGS (more spark-submit flags, e.g. --conf k=v)
EOF
  exit 2
}
die() { echo "spark-submit.sh: error: $*" >&2; exit 2; }

SHIP=${DEEPFM_SHIP_ENV:-}
WORKER_ENV=${DEEPFM_WORKER_ENV:-}
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --ship-env) SHIP=1; shift ;;
    --ship-env=*) SHIP=${1#--ship-env=}; shift ;;
    --worker-env=*) WORKER_ENV=${1#--worker-env=}; shift ;;
    --worker-env) die "--worker-env needs a directory: --worker-env=DIR" ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (options go before STAGE; see $0 --help)" ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || usage
case "$SHIP" in ""|0|false|no) ;; *) [ -z "$WORKER_ENV" ] || die "--ship-env and --worker-env (DEEPFM_SHIP_ENV, DEEPFM_WORKER_ENV): choose one" ;; esac
case "$WORKER_ENV" in ""|/*) ;; *) die "--worker-env=$WORKER_ENV: give the absolute path the workers see" ;; esac

. "$ROOT/scripts/stack.sh"
[ -x "$VENV/bin/python" ] || bash "$ROOT/scripts/setup.sh"
PY="$VENV/bin/python"
SPARK_HOME=$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
DEPLOY_MODE=${SPARK_DEPLOY_MODE:-client}
case "$DEPLOY_MODE" in client|cluster) ;; *) die "SPARK_DEPLOY_MODE=$DEPLOY_MODE: use client or cluster" ;; esac

DRIVER_JAVA_OPTIONS=${SPARK_DRIVER_JAVA_OPTIONS:--XX:-DontCompileHugeMethods}
# This run's Spark log: a trace of spark-submit's own failure lands there (deepfm/logs.py), and in
# client mode the driver's whole log, whose path a failed stage's error line names.
export DEEPFM_SPARK_LOG=${DEEPFM_SPARK_LOG:-${DEEPFM_LOG_DIR:-$PWD/logs}/$1-$(date -u +%Y%m%dT%H%M%S)-$$.spark.log}
if [ "$DEPLOY_MODE" = client ]; then
  # The driver runs here; the console keeps one line per message (deepfm/conf/spark-log4j2.properties).
  DRIVER_JAVA_OPTIONS+=" -Dlog4j2.configurationFile=$ROOT/deepfm/conf/spark-log4j2.properties"
  DRIVER_JAVA_OPTIONS+=" -Ddeepfm.spark.log=$DEEPFM_SPARK_LOG"
fi
cmd=("$SPARK_HOME/bin/spark-submit" --master "${SPARK_MASTER:-local[*]}" --deploy-mode "$DEPLOY_MODE"
     --driver-memory "${SPARK_DRIVER_MEMORY:-4g}" --driver-java-options "$DRIVER_JAVA_OPTIONS")
case "$SHIP" in
  ""|0|false|no)
    if [ -n "$WORKER_ENV" ]; then
      # Installed once per worker: executors start its interpreter in place. Whether it holds this
      # checkout's code is checked when the stage starts (deepfm/environment.py).
      driver_python=$PY
      [ "$DEPLOY_MODE" = cluster ] && driver_python=$WORKER_ENV/bin/python
      cmd+=(--conf "spark.pyspark.python=$WORKER_ENV/bin/python" --conf "spark.pyspark.driver.python=$driver_python")
    else
      # Executors run this checkout's .venv: right for local mode and for workers that see its path.
      export PYSPARK_PYTHON=${PYSPARK_PYTHON:-$PY} PYSPARK_DRIVER_PYTHON=${PYSPARK_DRIVER_PYTHON:-$PY}
    fi ;;
  *)
    ARCHIVE=$SHIP
    case "$ARCHIVE" in 1|true|yes) ARCHIVE=$ROOT/dist/deepfm-env.tar.gz ;; esac
    case "$ARCHIVE" in
      *://*) ;;  # file://, hdfs://, s3a://...: spark-submit fetches it (a missing one: exit 2, pipelines/spark.py)
      *) [ -f "$ARCHIVE" ] || die "environment archive $ARCHIVE not found: build it with 'make package', or name one with --ship-env=PATH"
         ARCHIVE=$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE") ;;
    esac
    # Executors (and, in cluster mode, the driver) unpack the archive as ./env in their working
    # directory and run its interpreter: nothing of this checkout needs to be visible to them.
    driver_python=$PY
    [ "$DEPLOY_MODE" = cluster ] && driver_python=./env/bin/python
    cmd+=(--archives "$ARCHIVE#env" --conf spark.pyspark.python=./env/bin/python
          --conf "spark.pyspark.driver.python=$driver_python")
    ;;
esac
if [ -n "${SPARK_SUBMIT_ARGS:-}" ]; then
  # Shell words, as a shell would split them (--conf "spark.executor.extraJavaOptions=-Xss4m -XX:+UseG1GC"
  # stays one word), by Python's shlex: nothing in the value is run, as eval would run it.
  split_words='import os, shlex, sys; sys.stdout.write("".join(w + "\0" for w in shlex.split(os.environ["SPARK_SUBMIT_ARGS"])))'
  "$PY" -c "$split_words" >/dev/null 2>&1 || die "SPARK_SUBMIT_ARGS: unbalanced quotes in: $SPARK_SUBMIT_ARGS"
  mapfile -d '' -t extra < <("$PY" -c "$split_words")
  cmd+=("${extra[@]}")
fi
cmd+=("$ROOT/jobs/cli.py" "$@")

if [ "$DRY_RUN" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
# spark-submit's own failures (before the stage runs) become one line and the right exit code.
exec "$PY" -m deepfm.logs "${cmd[@]}"
