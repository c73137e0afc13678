#!/usr/bin/env bash
# Fail when nbdev_export would change ens_distill/ (library out of sync with the notebooks in nbs/).
set -euo pipefail
BIN=${1:-.venv/bin}
snap=$(mktemp -d)
cp -r ens_distill "$snap/"
"$BIN/nbdev_export"
if ! diff -r -q -x __pycache__ "$snap/ens_distill" ens_distill; then
  echo "ERROR: nbdev_export changed ens_distill/ (shown above): the library is out of sync with nbs/. Run 'make export' and commit." >&2
  rm -rf "$snap"; exit 1
fi
rm -rf "$snap"
echo "export check: ens_distill/ is in sync with nbs/"
