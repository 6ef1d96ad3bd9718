#!/usr/bin/env bash
# Create ./.venv if missing and install requirements-dev.txt into it, again only when that
# file (or the interpreter) changes: a stamp in the venv holds the hash of what was installed.
#
#   scripts/setup-venv.sh [VENV_DIR] [REQUIREMENTS]
#
# PYTHON picks the interpreter that creates the venv (default python3).
set -euo pipefail

cd "$(dirname "$0")/.."
venv=${1:-.venv}
req=${2:-requirements-dev.txt}
python=${PYTHON:-python3}
stamp=$venv/.requirements.sha256

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "setup-venv: creating $venv"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf "$venv"
        scripts/setup-system.sh python3-venv
        "$python" -m venv "$venv"
    fi
fi

# Packages installed without their dependencies, after the others (see the file's comment).
nodeps=
if [ "$req" = requirements-dev.txt ] && [ -f requirements-nodeps.txt ]; then
    nodeps=requirements-nodeps.txt
fi

want=$( { sha256sum "$req" ${nodeps:+"$nodeps"} | cut -d' ' -f1; "$venv/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
    exit 0
fi

echo "setup-venv: installing $req into $venv"
rm -f "$stamp"
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$req"
if [ -n "$nodeps" ]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q --no-deps -r "$nodeps"
fi
echo "$want" >"$stamp"
