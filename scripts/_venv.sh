# Sourced by scripts/demo and scripts/test: make sure .venv exists and holds
# the project with its test extras, reinstalling only when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "hearthfile needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    echo "setting up $VENV (first run only)..." >&2
    if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip &&
           "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"; } >"$VENV/install.log" 2>&1; then
        cat "$VENV/install.log" >&2
        echo "installing hearthfile's dependencies failed (log above)" >&2
        exit 1
    fi
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
# Byte-compile the project once here: where PYTHONDONTWRITEBYTECODE is set, every CLI
# call would otherwise compile every module it imports (tens of ms per call).
"$VENV/bin/python" -m compileall -q "$ROOT/hearthfile" >/dev/null || true
