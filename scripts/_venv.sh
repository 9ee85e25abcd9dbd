# Sourced by scripts/run, scripts/test, scripts/lint and friends: make sure .venv
# exists and holds this checkout with the given extras installed.  Re-installs only
# when pyproject.toml changed since the last install or these extras are new (a
# stamp file records the hash and every set of extras installed with it).
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
  local want hash stamp="$VENV/.fabstir-installed"
  hash="$(sha256sum <"$ROOT/pyproject.toml" | cut -c1-16)"
  want="${hash}-${extras}"
  local have=0
  if [ -f "$stamp" ]; then
    if grep -qx -- "$want" "$stamp"; then have=1; fi
    if [ -z "$extras" ] && grep -q -- "^${hash}-" "$stamp"; then have=1; fi  # any extras include the base
  fi
  if [ "$have" = 0 ]; then
    echo "installing fabstir-node${extras:+[$extras]} into $VENV" >&2
    local log="$VENV/pip-install.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$ROOT${extras:+[$extras]}" >"$log" 2>&1; then
      grep -v '^WARNING: Location' "$log" | tail -30 >&2
      echo "installing fabstir-node failed; the full log is in $log" >&2
      exit 1
    fi
    # keep the extras installed from this same pyproject.toml: they are still there
    { grep -- "^${hash}-" "$stamp" 2>/dev/null || true; echo "$want"; } >"$stamp.new"
    mv "$stamp.new" "$stamp"
  fi
}
