#!/usr/bin/env bash
# Build llama.cpp's own llama-server, the peer `make bench` compares the platform with, off Apple Silicon.
#
# It is built from the llama.cpp source inside the pinned llama-cpp-python sdist (vendor/llama.cpp),
# so it runs the same llama.cpp as the platform's engine, with the same CPU flags as the wheel
# (deploy/llamacpp-cpu-flags.sh) and OpenMP as the wheel has it. The build takes about 10 minutes on
# 2 cores, so the binary is kept in LLAMA_SERVER_DIR (default ~/.cache/llm-platform/llama-server),
# under a key made of the requirement and the flags, and later runs take it at once.
# Prints the binary's path on its last line.
set -euo pipefail
PY="${VENV:-.venv}/bin/python"
REQUIREMENTS=requirements-llamacpp.txt

[ "$(uname -s)-$(uname -m)" != Darwin-arm64 ] || { echo "llama-server: Apple Silicon runs MLX" >&2; exit 1; }
requirement=$(grep -E '^llama-cpp-python==' "$REQUIREMENTS")
# shellcheck source=deploy/llamacpp-cpu-flags.sh
. "$(dirname "$0")/llamacpp-cpu-flags.sh"
# No web UI (it would be fetched from the network), no TLS, one static binary.
cmake_args="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
-DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF$(llamacpp_cpu_flags)"
key=$(printf '%s\n' "$requirement" "$cmake_args" "$(uname -m)" | sha256sum | cut -c1-16)
home="${LLAMA_SERVER_DIR:-$HOME/.cache/llm-platform/llama-server}/$key"
if [ ! -x "$home/llama-server" ]; then
  echo "llama-server: building it once from the $requirement sdist (about 10 minutes on 2 cores)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d "$work" "$requirement" >&2
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  source_dir=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
  # shellcheck disable=SC2086
  cmake -S "$source_dir" -B "$work/build" $cmake_args >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -50 "$work/build.log" >&2; exit 1; }
  mkdir -p "$home.partial"
  cp "$work/build/bin/llama-server" "$home.partial/"
  rm -rf "$home" && mv "$home.partial" "$home"
fi
echo "$home/llama-server"
