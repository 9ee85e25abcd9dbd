# Sourced by scripts/run, scripts/test and friends: make sure .venv exists and
# holds this checkout with the given extras installed.  Re-installs only when
# pyproject.toml changed since the last install (a stamp file records its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FABSTIR_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

fabstir_venv() {
  local extras="${1:-}"
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "fabstir-node needs Python 3.11 or newer as '$PYTHON' (set PYTHON=...)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment in $VENV" >&2
    "$PYTHON" -m venv "$VENV"
  fi
  local want stamp="$VENV/.fabstir-installed"
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${extras}"
  if [ ! -f "$stamp" ] || ! grep -qx -- "$want" "$stamp"; then
    echo "installing fabstir-node${extras:+[$extras]} into $VENV" >&2
    local log="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT${extras:+[$extras]}" >"$log" 2>&1; then
      grep -v '^WARNING: Location' "$log" | tail -30 >&2
      echo "installing fabstir-node failed; the full log is in $log" >&2
      exit 1
    fi
    echo "$want" > "$stamp"
  fi
}
