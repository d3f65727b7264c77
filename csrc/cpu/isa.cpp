// csrc/cpu/isa.cpp — the run-time instruction-set choice (see isa.h).
#include "isa.h"

#include <cstdlib>
#include <cstring>

namespace minitl::cpu {
namespace {

Isa detect() {
#if MINITL_X86_64
    __builtin_cpu_init();  // libgcc's probe also checks that the OS saves ymm / zmm (XGETBV)
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (avx2 && __builtin_cpu_supports("avx512f")) return Isa::Avx512;
    if (avx2) return Isa::Avx2;
#endif
    return Isa::Generic;
}

Isa from_env(Isa cpu) {
    const char* v = std::getenv("MINITL_CPU_ISA");
    Isa cap = cpu;
    if (v == nullptr || std::strcmp(v, "auto") == 0 || *v == '\0') return cpu;
    if (std::strcmp(v, "avx512") == 0) cap = Isa::Avx512;
    else if (std::strcmp(v, "avx2") == 0) cap = Isa::Avx2;
    else if (std::strcmp(v, "generic") == 0) cap = Isa::Generic;
    return static_cast<int>(cap) < static_cast<int>(cpu) ? cap : cpu;
}

}  // namespace

Isa cpu_isa() {
    static const Isa found = detect();
    return found;
}

Isa isa() {
    static const Isa chosen = from_env(cpu_isa());
    return chosen;
}

const char* isa_name(Isa v) {
    switch (v) {
        case Isa::Avx512: return "avx512";
        case Isa::Avx2: return "avx2";
        default: return "generic";
    }
}

}  // namespace minitl::cpu
