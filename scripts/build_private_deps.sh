#!/usr/bin/env bash
# Builds qsur (CUDA backend on) on a machine that has a compiler, CMake and the
# CUDA toolkit but not the Debian -dev packages qsur needs and cannot install
# them (a GPU machine with no package access): the packages' .deb files,
# fetched elsewhere with `apt-get download`, are unpacked into a private
# prefix (never into /) and the build is pointed at it.
#   on a Debian 12 machine:  mkdir debs && cd debs && apt-get download libopenblas-dev \
#       libopenblas0-pthread libopenblas-pthread-dev liblapacke liblapacke-dev libncurses-dev \
#       libncursesw6 libncurses6 libreadline-dev libreadline8 libtinfo6 pkgconf pkgconf-bin \
#       libpkgconf3 libgfortran5 liblapack3 libblas3 libtmglib3
#   on the GPU machine:      scripts/build_private_deps.sh DEBS_DIR [BUILD_DIR] [PREFIX]
#   then, to run:            export LD_LIBRARY_PATH=$(scripts/build_private_deps.sh --libs PREFIX)
#   QSUR_CMAKE_ARGS (optional): more cmake arguments, e.g. -DQSUR_SHARED_DIR=...
set -euo pipefail
lib_path() {
  echo "$1/usr/lib/x86_64-linux-gnu/openblas-pthread:$1/usr/lib/x86_64-linux-gnu:$1/lib/x86_64-linux-gnu"
}
if [ "${1:-}" = --libs ]; then
  lib_path "${2:-/tmp/qsurdeps}"
  exit 0
fi
DEBS=$(cd "${1:?usage: build_private_deps.sh DEBS_DIR [BUILD_DIR] [PREFIX]}" && pwd)
B=${2:-build}
P=${3:-/tmp/qsurdeps}
SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -e "$P/.done" ]; then
  rm -rf "$P"
  mkdir -p "$P"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$P"; done
  # absolute symlinks point into /: make them point into the prefix
  find "$P" -type l | while read -r l; do
    t=$(readlink "$l")
    case "$t" in /*) ln -sfn "$P$t" "$l" ;; esac
  done
  # ncurses' linker scripts name libncursesw.so.6 and -ltinfo: point them at the
  # prefix's files, or ld takes the system's runtime copies (another version)
  for s in "$P"/usr/lib/x86_64-linux-gnu/libncurses*.so; do
    [ -L "$s" ] || sed -i "s|INPUT(\(lib[a-z]*\.so\.6\) -ltinfo)|INPUT($P/lib/x86_64-linux-gnu/\1 $P/lib/x86_64-linux-gnu/libtinfo.so.6)|" "$s"
  done
  # OpenBLAS provides blas.pc/lapack.pc through Debian's alternatives, which dpkg -x does not set up
  PC=$P/usr/lib/x86_64-linux-gnu/pkgconfig
  O=$P/usr/lib/x86_64-linux-gnu/openblas-pthread/pkgconfig
  cp "$O/openblas.pc" "$PC/"
  cp "$O/lapack-openblas.pc" "$PC/lapack.pc"
  cp "$O/blas-openblas.pc" "$PC/blas.pc"
  sed -i "s|/usr|$P/usr|g" "$PC"/*.pc
  touch "$P/.done"
fi
L=$(lib_path "$P")
export LD_LIBRARY_PATH=$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LIBRARY_PATH=$L
export CPATH=$P/usr/include:$P/usr/include/x86_64-linux-gnu
export PKG_CONFIG_LIBDIR=$P/usr/lib/x86_64-linux-gnu/pkgconfig
PKG=$(command -v pkg-config || echo "$P/usr/bin/pkgconf")
export PATH=/usr/local/cuda/bin:$PATH
# shellcheck disable=SC2086 # QSUR_CMAKE_ARGS is split into words on purpose
cmake -S "$SRC" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSUR_CUDA=ON -DPKG_CONFIG_EXECUTABLE="$PKG" \
  -DCMAKE_PREFIX_PATH="$P/usr;$P" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu ${QSUR_CMAKE_ARGS:-} >/dev/null
cmake --build "$B" -j"$(nproc)"
