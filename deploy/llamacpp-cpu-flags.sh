# Sourced by deploy/install-llamacpp.sh and deploy/install-llama-server.sh: the CMake flags that name
# this CPU's instruction sets one by one, so the wheel and llama-server are built alike.
# GGML_NATIVE=ON (-march=native) built binaries that died with "Illegal instruction" on some virtual CPUs.
llamacpp_cpu_flags() {
  local flags=""
  if [ "$(uname -m)" = x86_64 ]; then
    local cpu=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    has() { for flag; do [[ "$cpu" == *" $flag "* ]] || return 1; done; }
    flags+=" -DGGML_NATIVE=OFF"
    has avx && flags+=" -DGGML_AVX=ON"
    has avx2 && flags+=" -DGGML_AVX2=ON"
    has fma && flags+=" -DGGML_FMA=ON"
    has f16c && flags+=" -DGGML_F16C=ON"
    has bmi2 && flags+=" -DGGML_BMI2=ON"
    if has avx512f avx512cd avx512vl avx512dq avx512bw; then
      flags+=" -DGGML_AVX512=ON"
      has avx512vbmi && flags+=" -DGGML_AVX512_VBMI=ON"
      has avx512_vnni && flags+=" -DGGML_AVX512_VNNI=ON"
      has avx512_bf16 && flags+=" -DGGML_AVX512_BF16=ON"
    fi
  fi
  printf '%s' "$flags"
}
