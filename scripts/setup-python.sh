#!/usr/bin/env bash
# Creates the Python environment the reference tests use (independent implementations to compare
# against: SimpleITK as a real client of regsh's transform files; numpy, scipy, scikit-learn and
# scikit-image for metric references). Idempotent: does nothing when the
# environment already has the pinned packages. Location: $REGSH_PYENV or <repo>/target/pyenv.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
ENV=${REGSH_PYENV:-target/pyenv}
PKGS=(SimpleITK==2.5.7 numpy==2.4.6 scipy==1.17.1 scikit-image==0.26.0 scikit-learn==1.9.1)
command -v python3 >/dev/null || { echo "setup-python: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
if [ -x "$ENV/bin/python" ] && "$ENV/bin/python" - "${PKGS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
then
  echo "python env: up to date ($ENV)"
  exit 0
fi
echo "python env: creating $ENV with ${PKGS[*]}"
python3 -m venv "$ENV" || { echo "setup-python: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
"$ENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${PKGS[@]}"
