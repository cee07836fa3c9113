#!/usr/bin/env bash
# One command to run HuMo Studio (./launch.sh [flags]) or its tests (./launch.sh test [pytest args]).
# Makes .venv if missing and installs the pinned requirements (torch pinned by constraints.txt).
# `test` also installs the Debian packages the tests drive (chromium, espeak-ng, sox) when missing:
# with apt-get as root, else it names the one command to run and stops.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

debian_packages() {
  local need=()
  command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v sox >/dev/null 2>&1 || need+=(sox)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "The tests need these Debian packages; run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-test.txt constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-test.txt \
    -c constraints.txt
  echo "$want" > "$stamp"
fi
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
if [ "${1:-}" = "test" ]; then
  shift
  debian_packages
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python app.py "$@"
