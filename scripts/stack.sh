# Sourced by the set-up, packaging and submit scripts: which of the two tested stacks, and where it lives.
#   STACK=named    (default) constraints.txt in .venv: pyspark 3.5, pyarrow 14, numpy 1, Petastorm, Horovod
#   STACK=current  constraints-current.txt in .venv-current: pyspark 4, current pyarrow, numpy 2, pandas 2.3 (pyspark 4.3 warns on pandas 3)
# VENV overrides the folder either way.
STACK=${STACK:-named}
case "$STACK" in
  named) CONSTRAINTS=$ROOT/constraints.txt; EXTRAS=dev,bench,petastorm; VENV=${VENV:-$ROOT/.venv} ;;
  current) CONSTRAINTS=$ROOT/constraints-current.txt; EXTRAS=dev,bench; VENV=${VENV:-$ROOT/.venv-current} ;;
  *) printf 'STACK=%s: choose named (the default) or current\n' "$STACK" >&2; exit 2 ;;
esac
