#!/usr/bin/env bash
# Create .venv-ddsp in the repository root: a separate environment with
# condgen (editable, test extra) beside Magenta's TensorFlow-only ddsp, for the
# parity tests in tests/test_ddsp_parity.py (`pytest -m ddsp_reference`).
#
# `pip install ddsp` resolves to TensorFlow <= 2.11, which has no Python 3.11
# build, and to a crepe source build that downloads model weights. So ddsp and
# tf-keras go in without their dependencies, and only the packages that
# ddsp.core, ddsp.synths, ddsp.effects and ddsp.losses import are added by
# hand. Without --no-deps, tf-keras would pull the full tensorflow wheel
# beside tensorflow-cpu. crepe is not installed at all: the parity tests put a
# stand-in module in its place before `import ddsp`.
#
# Safe to run again: an existing environment is reused and pip skips what is
# already installed at the pinned versions.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${REPO_ROOT}/.venv-ddsp"
PYTHON="${PYTHON:-python3}"

cd "${REPO_ROOT}"

if [ ! -x "${VENV}/bin/python" ]; then
    "${PYTHON}" -m venv "${VENV}"
fi
PIP=("${VENV}/bin/python" -m pip install --quiet)

# The project itself, with the versions it is tested with.
"${PIP[@]}" torch==2.14.1 torchaudio==2.11.1
"${PIP[@]}" -c requirements.txt -e '.[test]'

# The TensorFlow stack that the imported parts of ddsp need.
"${PIP[@]}" \
    'tensorflow-cpu==2.21.*' \
    'tensorflow-probability==0.25.*' \
    'gin-config>=0.5' \
    librosa scipy
"${PIP[@]}" --no-deps 'ddsp==3.7.0' 'tf-keras==2.21.*'

echo "ddsp reference environment ready: ${VENV}"
echo "run: ${VENV}/bin/python -m pytest -m ddsp_reference tests/test_ddsp_parity.py"
