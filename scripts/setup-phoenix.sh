#!/usr/bin/env bash
# Idempotent: a separate virtualenv (.venv-phoenix) holding Arize Phoenix, the
# real third-party OTLP backend the end-to-end export tests send spans to.
# Separate because Phoenix pulls in a large tree (numpy, pandas, sqlalchemy,
# strawberry...) whose pins must not constrain the tracer's own venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PHOENIX_VERSION="${PHOENIX_VERSION:-20.26.1}"
VENV="${PHOENIX_VENV:-.venv-phoenix}"
STAMP="$VENV/.installed-arize-phoenix-$PHOENIX_VERSION"
[ -e "$STAMP" ] && exit 0

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for cand in python3.11 python3.12 python3; do
        if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
            PY="$(command -v "$cand")"; break
        fi
    done
fi
[ -n "$PY" ] || { echo "setup-phoenix: need Python 3.10+" >&2; exit 1; }

echo "setup: installing arize-phoenix $PHOENIX_VERSION into $VENV (once; takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
# (pip's notes about absent local package mirrors are noise here)
"$VENV/bin/python" -m pip install -q "arize-phoenix==$PHOENIX_VERSION" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$VENV/bin/python" -c 'import phoenix' || { echo "setup-phoenix: phoenix does not import" >&2; exit 1; }
touch "$STAMP"
