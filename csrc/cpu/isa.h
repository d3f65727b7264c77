// csrc/cpu/isa.h — which SIMD instruction set the kernels may use, chosen once at run time.
//
// The widest set this CPU (and its OS) supports, capped by the environment variable
// MINITL_CPU_ISA (auto | avx512 | avx2 | generic), read on first use. The cap lets one machine
// measure and test the narrower paths: an AVX-512 CPU runs minitl as an AVX2-only CPU would
// with MINITL_CPU_ISA=avx2. Every run-time choice goes through isa(): the GEMM and
// dequantizing micro-kernels (unless a path is forced by set_gemm_path / set_quant_path) and
// the element-wise kernels compiled per ISA with MINITL_SIMD_DISPATCH (vec_math.h).
#pragma once

#include "common.h"

namespace minitl::cpu {

enum class Isa : int { Generic = 0, Avx2 = 1, Avx512 = 2 };

// What the CPU offers: Avx2 needs AVX2 and FMA, Avx512 AVX-512F as well.
Isa cpu_isa();
// cpu_isa() capped by MINITL_CPU_ISA; an unknown value is ignored here (minitl's Python side
// refuses it with a message before the extension is first used).
Isa isa();
const char* isa_name(Isa isa);

}  // namespace minitl::cpu
