#!/usr/bin/env bash
# A virtualenv for tests/integrations (MLflow, MLServer), beside the main environment, and prints its python on the
# last line of stdout.
#
# Why a second environment: MLServer 1.7 needs protobuf < 7 and uvloop < 0.22 (SeldonIO/MLServer#2286), and
# MLflow pins pyarrow; installed into the main environment they would change what the rest of the suite runs on.
# The venv sees the main environment's packages (--system-site-packages, otel-mlmon itself included) and adds only
# the [mlflow] and [mlserver] extras' packages over them. Cached under
# ${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/otel-mlmon}/venv-integrations, keyed by the Python version and
# the extras' requirements: a rerun on the same machine prints the path at once.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
requirements=("mlflow>=2.3" "mlserver>=1.7" "mlserver-sklearn>=1.7" "uvloop<0.22")
key="$("$python" -c 'import sys; print(sys.version.split()[0])') ${requirements[*]}"
venv="${MLMON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-mlmon}/venv-integrations"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.key" 2>/dev/null)" != "$key" ]; then
  rm -rf "$venv"
  "$python" -m venv --system-site-packages "$venv"
  echo "integrations-venv: pip install ${requirements[*]} into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" >&2
  echo "$key" > "$venv/.key"
fi
# otel-mlmon from this checkout (the main environment's editable install may point elsewhere)
"$venv/bin/python" -c "import otel_mlmon, sys; sys.exit(0 if otel_mlmon.__file__.startswith('$here/') else 1)" \
  2>/dev/null || "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$here" >&2
echo "$venv/bin/python"
