#!/usr/bin/env bash
# Build and install llama-cpp-python (requirements-llamacpp.txt) into the venv, off Apple Silicon.
#
# PyPI has only its source. The build takes about 6 minutes on 2 cores, so the wheel is kept in
# LLAMACPP_WHEELS (default ~/.cache/llm-platform/wheels), under a key made of the requirement
# and the build flags: later installs on the same machine (a fresh clone, CI) take it at once.
# The flags name this CPU's instruction sets one by one (deploy/llamacpp-cpu-flags.sh).
# LLAMACPP=0 skips it; without llama.cpp the engine falls back to MLX (engines/provider.py).
set -euo pipefail
PY="${VENV:-.venv}/bin/python"
REQUIREMENTS=requirements-llamacpp.txt

skip() { echo "llama.cpp: $1; the engine will use MLX"; exit 0; }
[ "${LLAMACPP:-1}" != 0 ] || skip "LLAMACPP=0"
[ "$(uname -s)-$(uname -m)" != Darwin-arm64 ] || { echo "llama.cpp: Apple Silicon runs MLX"; exit 0; }
requirement=$(grep -E '^llama-cpp-python==' "$REQUIREMENTS")
if "$PY" -m pip show llama-cpp-python 2>/dev/null | grep -qx "Version: ${requirement#*==}"; then exit 0; fi

# shellcheck source=deploy/llamacpp-cpu-flags.sh
. "$(dirname "$0")/llamacpp-cpu-flags.sh"
cmake_args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF$(llamacpp_cpu_flags)"
key=$(printf '%s\n' "$requirement" "$cmake_args" "$(uname -m)" "$("$PY" -c 'import sys; print(sys.version_info[:2])')" \
  | sha256sum | cut -c1-16)
wheels="${LLAMACPP_WHEELS:-$HOME/.cache/llm-platform/wheels}/$key"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "llama.cpp: building $requirement once for this CPU (about 6 minutes on 2 cores)"
  echo "llama.cpp: CMAKE_ARGS=$cmake_args"
  mkdir -p "$wheels.partial"
  if ! CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$PY" -m pip wheel --quiet --disable-pip-version-check --no-cache-dir --no-deps -w "$wheels.partial" "$requirement"; then
    rm -rf "$wheels.partial"
    skip "the build failed (a compiler and cmake are needed)"
  fi
  rm -rf "$wheels" && mv "$wheels.partial" "$wheels"
fi
"$PY" -m pip install --quiet --disable-pip-version-check --only-binary llama-cpp-python --find-links "$wheels" \
  -r "$REQUIREMENTS"
echo "llama.cpp: installed $requirement"
