#!/usr/bin/env bash
# Install Debian's OpenBLAS (libopenblas0-pthread) for MLX on Linux CPUs, where it can be done.
# MLX's bundled reference BLAS makes batched decoding several times slower (see docs/benchmarks.md);
# engines/blas.py loads OpenBLAS when present and falls back to the bundled BLAS otherwise.
set -uo pipefail
[ "$(uname -s)" = Linux ] || exit 0
[ "${ENGINE_BLAS:-auto}" = auto ] || exit 0
ls /usr/lib/*-linux-gnu/openblas-pthread/libblas.so.3 >/dev/null 2>&1 && exit 0
notice="notice: OpenBLAS is not installed, MLX will use its slow reference BLAS (install libopenblas0-pthread)"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "$notice"
  exit 0
fi
echo "installing libopenblas0-pthread for MLX"
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -q -o DPkg::Lock::Timeout=300 libopenblas0-pthread >/dev/null; }
apt_install || { apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null && apt_install; } || echo "$notice"
exit 0
