#!/usr/bin/env bash
# Installs the Debian 12 packages qsur needs to build and test, when any is missing.
# Used by the README's first command and by tests/run_all.sh (and so by CI).
# `deps.sh test` adds what only the whole test suite needs: clang (CI builds with
# it too), groff and man (the manual page is rendered), bc (timing checks).
set -euo pipefail
# libFuzzer for tests/fuzz/run.sh (clang, libclang-rt-14-dev) and llvm-symbolizer (llvm)
fuzz_pkgs=(clang libclang-rt-14-dev llvm)
pkgs=(build-essential cmake pkg-config libopenblas-dev liblapacke-dev libncurses-dev libreadline-dev tmux)
if [ "${1:-}" = test ]; then
  pkgs+=(clang groff-base man-db bc)
fi
missing=()
for p in "${pkgs[@]}" "${fuzz_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
