#!/usr/bin/env bash
# The simulator's, the disk layer's, Raft's and the store's tests on every other supported
# Python (3.12, 3.13): asyncio's internals differ between versions, and the simulator drives
# them. The default Python (3.11) runs the whole suite in `make test`; this runs tests/sim,
# tests/fs, tests/raft, tests/kv, tests/scenarios and tests/mutants in a venv per version
# (.venv-3.12, .venv-3.13), created on first use. It also checks that a seed is the same run on
# every version: the trace hashes of a few chaos seeds must equal 3.11's. (A store scenario's
# run is not the same across versions, as redis-py and asyncio.timeout schedule differently, so
# no test pins one store seed's schedule: they search a few seeds for what they expect.)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {  # prints the path of pythonX.Y, via PATH or pyenv; nothing if absent
  local v=$1 p
  if p=$(command -v "python$v" 2>/dev/null) && "$p" -c 'import sys' 2>/dev/null; then
    echo "$p"; return
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local full
    full=$(pyenv versions --bare 2>/dev/null | grep -E "^$v\.[0-9]+$" | sort -V | tail -n 1 || true)
    if [ -n "$full" ]; then echo "$(pyenv root)/versions/$full/bin/python$v"; fi
  fi
}

hashes() { (cd tests/sim && "$1" print_trace_hashes.py); }
reference=$(hashes "$PWD/.venv/bin/python")
echo "trace hashes on $(.venv/bin/python -V): $reference"

status=0
for v in 3.12 3.13; do
  py=$(find_python "$v")
  if [ -z "$py" ]; then
    echo "python$v not found (PATH or pyenv): its run is skipped" >&2
    continue
  fi
  venv=".venv-$v"
  if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -e '.[dev]'
    touch "$venv/.installed"
  fi
  echo "== Python $v: tests/sim tests/fs tests/raft tests/kv tests/scenarios tests/mutants"
  "$venv/bin/python" -m pytest -q tests/sim tests/fs tests/test_layers.py tests/raft tests/kv \
    tests/scenarios tests/mutants \
    || status=1
  mine=$(hashes "$PWD/$venv/bin/python")
  if [ "$mine" != "$reference" ]; then
    echo "FAILED: Python $v gives other trace hashes for the same seeds: $mine" >&2
    status=1
  else
    echo "Python $v: the same trace hashes for the same seeds"
  fi
done
exit $status
