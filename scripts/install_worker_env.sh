#!/usr/bin/env bash
# Install the packed environment (dist/deepfm-env.tar.gz) once on a worker, so that applications run
# it in place (spark-submit.sh --worker-env=DEST/current) instead of shipping and unpacking 1.4 GB per
# executor of every application. Run it on every worker (and, for --deploy-mode cluster, wherever a
# driver may run), with the archive copied there; `make package` puts this script beside the archive.
#
#   install_worker_env.sh ARCHIVE DEST
#
# DEST/<code digest>/  one installed environment per build of the code (the digest the driver checks
#                      its executors against, deepfm/environment.py)
# DEST/current         a link to the newest; install between runs: Python workers started after the
#                      switch run the new one
# Older installs are removed, except the one `current` pointed to before. Nothing in DEST that this
# script did not write is touched.
set -euo pipefail

die() { echo "install_worker_env.sh: error: $*" >&2; exit 2; }
[ $# -eq 2 ] || die "usage: $0 ARCHIVE DEST"
archive=$1 dest=$2
[ -f "$archive" ] || die "ARCHIVE $archive: no such file (build it with 'make package')"
OWNED=.deepfm-worker-envs   # marks DEST as this script's
MARK=.deepfm-worker-env     # marks each installed environment

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
if [ ! -e "$dest/$OWNED" ]; then
  [ -z "$(ls -A "$dest")" ] || die "DEST $dest holds files this script did not write: name an empty or new directory"
  : > "$dest/$OWNED"
fi

incoming=$(mktemp -d "$dest/.incoming-XXXXXX")
trap 'rm -rf "$incoming"' EXIT
tar -xzf "$archive" -C "$incoming"
# Imports what executors import, on this node's system libraries, and names the code it holds.
identity=$("$incoming/bin/python" -m deepfm.environment) \
  || die "the environment in $archive does not run on this node (see the error above)"
code=$(printf '%s' "$identity" | sed -n 's/.*"code": "\([0-9a-f]*\)".*/\1/p')
[ -n "$code" ] || die "the environment in $archive does not hold this project: $identity"

if [ -e "$dest/$code/$MARK" ]; then
  echo "already installed: $dest/$code" >&2
else
  : > "$incoming/$MARK"
  chmod -R a+rX "$incoming"
  mv "$incoming" "$dest/$code"
fi
previous=$(readlink "$dest/current" 2>/dev/null || true)
ln -s "$code" "$dest/.current-$$"
mv -T "$dest/.current-$$" "$dest/current"  # one rename: a reader sees the old link or the new one

for old in "$dest"/*/; do
  old=${old%/}
  [ -L "$old" ] && continue  # `current` itself
  name=$(basename "$old")
  [ -e "$old/$MARK" ] && [ "$name" != "$code" ] && [ "$name" != "$previous" ] && rm -rf "$old"
done
echo "installed $dest/$code; run with: spark-submit.sh --worker-env=$dest/current" >&2
