// CPU feature detection, the instruction-set level the kernels dispatch on, and the thread count.
#pragma once
#include <string>
#include <vector>

namespace smolvlm {

// Kernel families, from most to least capable. Each is compiled into the addon with its own
// target attributes; the one used is chosen at run time from what this CPU (and OS) supports.
enum class Isa : int {
  Scalar = 0,  // portable C++, any CPU
  Neon = 1,    // arm64 Advanced SIMD (always present on aarch64)
  Avx2 = 2,    // x86-64 AVX2 + FMA + F16C
  Avx512 = 3,  // x86-64 AVX-512 F/BW/VL/DQ (+ FMA, F16C)
};

struct CpuFeatures {
  bool avx2 = false;       // AVX2 + FMA + F16C with OS support for ymm state
  bool avx512 = false;     // AVX-512 F/BW/VL/DQ with OS support for zmm state
  bool avx512bf16 = false; // AVX512_BF16 (vdpbf16ps, vcvtneps2bf16)
  bool avx512vnni = false; // AVX512_VNNI (vpdpbusd on zmm/ymm with AVX512VL)
  bool avxvnni = false;    // AVX-VNNI (VEX vpdpbusd on ymm: Alder Lake and later, Zen 5)
  bool neon = false;
  bool dotprod = false;    // arm64 SDOT/UDOT (FEAT_DotProd: Armv8.4, optional from Armv8.2)
};

const CpuFeatures& cpu_features();

// Every level this CPU can run, best first.
std::vector<Isa> available_isas();
const char* isa_name(Isa isa);
bool parse_isa(const std::string& name, Isa* out);

// The level in use: the best available, or SMOLVLM_ISA when set (and available), or what
// set_isa() chose last. Read on every kernel call.
Isa current_isa();
// Returns false (and changes nothing) when the CPU cannot run `isa`.
bool set_isa(Isa isa);

// Physical cores this process may run on (affinity mask, cgroup quota), at least 1.
int physical_cores();

}  // namespace smolvlm
