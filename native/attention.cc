// Fused attention: per-ISA bodies (attention_impl.inc, on the GEMM micro-kernel) and dispatch.
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu.h"
#include "kernels.h"
#include "simd.h"
#include "threadpool.h"

namespace smolvlm {

#ifdef SMOLVLM_X86
SMOLVLM_BEGIN_AVX512
namespace avx512 {
namespace {
#include "simd_avx512.inc"
#include "microkernel.inc"
#include "attention_impl.inc"
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace avx512
SMOLVLM_END_TARGET

SMOLVLM_BEGIN_AVX2
namespace avx2 {
namespace {
#include "simd_avx2.inc"
#include "microkernel.inc"
#include "attention_impl.inc"
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace avx2
SMOLVLM_END_TARGET
#endif

#ifdef SMOLVLM_ARM64
namespace neon {
namespace {
#include "simd_neon.inc"
#include "microkernel.inc"
#include "attention_impl.inc"
}  // namespace
}  // namespace neon
#endif

namespace scalar {
namespace {
#include "simd_scalar.inc"
#include "microkernel.inc"
#include "attention_impl.inc"
}  // namespace
}  // namespace scalar

#if defined(SMOLVLM_X86) && (defined(__GNUC__) || defined(__clang__))
#define SMOLVLM_HAVE_BF16_ATTENTION 1
SMOLVLM_BEGIN_AVX512BF16
namespace avx512bf16 {
namespace {
#include "simd_avx512.inc"
#include "bf16_ukernel.inc"
#include "attention_bf16.inc"
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace avx512bf16
SMOLVLM_END_TARGET

// The per-ISA attention again, its decoding row path on vdpbf16ps (attention_decode_bf16.inc).
SMOLVLM_BEGIN_AVX512BF16
namespace avx512bf16 {
namespace decode {
namespace {
#define SMOLVLM_DECODE_BF16 1
#include "simd_avx512.inc"
#include "microkernel.inc"
#include "attention_impl.inc"
#undef SMOLVLM_DECODE_BF16
#undef SMOLVLM_SIMD_X86
}  // namespace
}  // namespace decode
}  // namespace avx512bf16
SMOLVLM_END_TARGET
#endif

void attention(const AttentionArgs& a) {
  if (a.seqQ == 0 || a.numHeads == 0 || a.headDim == 0) return;
#ifdef SMOLVLM_HAVE_BF16_ATTENTION
  if (a.bf16 && a.seqQ > 2 && a.seqK > 0 && a.headDim <= 512 && linear_bf16_native()) {
    avx512bf16::attn_bf16::attention(a);
    return;
  }
  // Decoding (one or two query rows) over a bf16 cache: bf16 products on the same instruction.
  if (a.bf16 && a.seqQ <= 2 && a.kvDtype == kBF16 && a.headDim % 32 == 0 && linear_bf16_native()) {
    avx512bf16::decode::attention_isa(a);
    return;
  }
#endif
  switch (current_isa()) {
#ifdef SMOLVLM_X86
    case Isa::Avx512: avx512::attention_isa(a); return;
    case Isa::Avx2: avx2::attention_isa(a); return;
#endif
#ifdef SMOLVLM_ARM64
    case Isa::Neon: neon::attention_isa(a); return;
#endif
    default: scalar::attention_isa(a); return;
  }
}

}  // namespace smolvlm
