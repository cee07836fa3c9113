#!/usr/bin/env bash
# One command to run HuMo Studio (./launch.sh [flags]) or its tests (./launch.sh test [pytest args]).
# Makes .venv if missing and installs the pinned requirements (torch pinned by constraints.txt).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt -c constraints.txt
  echo "$want" > "$stamp"
fi
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
if [ "${1:-}" = "test" ]; then
  shift
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python app.py "$@"
