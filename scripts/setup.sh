#!/usr/bin/env bash
# Shared set-up for scripts/run and scripts/test: a virtual environment in .venv with Annal
# installed (editable, with test extras), and Debian's ZooKeeper + Java when missing.
# Sourced, not executed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ANNAL_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

die() { echo "error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@";
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@";
  else return 1; fi
}

ensure_python() {
  command -v "$PY" >/dev/null || die "python3 not found; install Python 3.11+: apt-get install -y python3 python3-venv"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11+ is required, found $("$PY" --version)"
  if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "== installing python3-venv"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
      || die "python3-venv is missing; run as root: apt-get install -y python3-venv"
  fi
}

ensure_zookeeper() {
  if [ -d /usr/share/zookeeper ] && command -v java >/dev/null 2>&1; then return 0; fi
  echo "== installing ZooKeeper and Java (apt-get)"
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper; }; then
    die "ZooKeeper (and Java) are needed; run as root: apt-get update && apt-get install -y zookeeper"
  fi
}

ensure_kcat() {
  # kcat (librdkafka's command-line client) drives the Kafka listener's tests.
  if command -v kcat >/dev/null 2>&1; then return 0; fi
  echo "== installing kcat (apt-get)"
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat; }; then
    die "kcat is needed by the Kafka listener's tests; run as root: apt-get update && apt-get install -y kcat"
  fi
}

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # Dependencies: re-installed only when pyproject.toml changed since the last install.
  local stamp="$VENV/.annal-installed"
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "== installing Annal's dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "$ROOT[test]"
    touch "$stamp"
  fi
  # Annal itself: a regular (non-editable) install of this tree every time, so the tests and
  # the quickstart run what a user's `pip install` gets, never the source tree on sys.path.
  echo "== installing Annal from $ROOT into $VENV"
  "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$ROOT"
  # The C extension (annal/record/_native.c) is optional: without a compiler the install
  # succeeds with the pure-Python codec. Say once which one this installation runs.
  echo "== $("$VENV/bin/annal" --version)"
}
