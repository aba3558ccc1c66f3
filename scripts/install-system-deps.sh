#!/usr/bin/env bash
# System packages the tests and benchmarks need, installed with apt-get when missing:
#   redis-tools   redis-cli, for the store's real-process tests (tests/kv/test_kv_processes*.py)
#   redis-server  the non-replicated reference of the store's benchmark (also brings
#                 redis-benchmark)
#   chromium      headless, to screenshot the replay's HTML timeline
#                 (tests/campaign/test_timeline_browser.py)
# Idempotent (installs only what is missing) and quiet (one line per action). Works as root on
# a fresh Debian/Ubuntu machine that never ran `apt-get update`, or through passwordless sudo.
# Never fails the build: without apt-get, root or a network it prints why and exits 0, and the
# tests that need redis-cli skip with that reason. `make setup` / `make test` call it.
set -euo pipefail

say() { echo "install-system-deps: $*" >&2; }

missing=()
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get here: install ${missing[*]} yourself (tests that need redis-cli will skip)"
    exit 0
fi

run=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        run=(sudo -n)
    else
        say "not root and no passwordless sudo: install ${missing[*]} yourself (tests that need redis-cli will skip)"
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
say "installing ${missing[*]} with apt-get"
# A fresh machine has no package lists: update first (only reached when something is missing).
if ! ${run[@]+"${run[@]}"} apt-get update -qq >/dev/null 2>&1; then
    say "apt-get update failed (no network?); trying the install with the lists at hand"
fi
if ! ${run[@]+"${run[@]}"} apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    say "apt-get install ${missing[*]} failed: install it yourself (tests that need redis-cli will skip)"
    exit 0
fi
say "installed ${missing[*]}"
