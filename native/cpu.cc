// CPU feature detection (cpuid/xgetbv on x86-64, baseline Advanced SIMD on arm64) and the count of
// physical cores the thread pool is sized to.
#include "cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>
#include <utility>

#if defined(__x86_64__) || defined(_M_X64)
#define SMOLVLM_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
#include <immintrin.h>
#else
#include <cpuid.h>
#endif
#endif

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__linux__) && defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace smolvlm {
namespace {

#ifdef SMOLVLM_X86
void cpuid(unsigned leaf, unsigned sub, unsigned r[4]) {
#if defined(_MSC_VER)
  int regs[4];
  __cpuidex(regs, static_cast<int>(leaf), static_cast<int>(sub));
  for (int i = 0; i < 4; i++) r[i] = static_cast<unsigned>(regs[i]);
#else
  r[0] = r[1] = r[2] = r[3] = 0;
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}

unsigned long long xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
#endif
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#ifdef SMOLVLM_X86
  unsigned r[4];
  cpuid(0, 0, r);
  const unsigned maxLeaf = r[0];
  cpuid(1, 0, r);
  const unsigned ecx1 = r[2];
  const bool fma = ecx1 & (1u << 12), osxsave = ecx1 & (1u << 27), avx = ecx1 & (1u << 28), f16c = ecx1 & (1u << 29);
  if (!osxsave || !avx) return f;
  const unsigned long long xcr0 = xgetbv0();
  const bool ymmState = (xcr0 & 0x6) == 0x6;
  const bool zmmState = (xcr0 & 0xe6) == 0xe6;
  if (maxLeaf < 7) return f;
  cpuid(7, 0, r);
  const unsigned ebx7 = r[1], ecx7 = r[2], maxSub7 = r[0];
  const bool avx2 = ebx7 & (1u << 5);
  const bool avx512f = ebx7 & (1u << 16), avx512dq = ebx7 & (1u << 17), avx512bw = ebx7 & (1u << 30), avx512vl = ebx7 & (1u << 31);
  f.avx2 = ymmState && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmmState && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512vnni = f.avx512 && (ecx7 & (1u << 11));
  if (maxSub7 >= 1) {
    cpuid(7, 1, r);
    f.avx512bf16 = f.avx512 && (r[0] & (1u << 5));
    f.avxvnni = f.avx2 && (r[0] & (1u << 4));
  }
#elif defined(__aarch64__)
  f.neon = true;
#if defined(__linux__)
  f.dotprod = getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
#elif defined(__APPLE__)
  int dot = 0;
  size_t size = sizeof dot;
  f.dotprod = sysctlbyname("hw.optional.arm.FEAT_DotProd", &dot, &size, nullptr, 0) == 0 && dot != 0;
#endif
#endif
  return f;
}

Isa best_isa(const CpuFeatures& f) {
  if (f.avx512) return Isa::Avx512;
  if (f.avx2) return Isa::Avx2;
  if (f.neon) return Isa::Neon;
  return Isa::Scalar;
}

bool supported(const CpuFeatures& f, Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Neon: return f.neon;
    case Isa::Avx2: return f.avx2;
    case Isa::Avx512: return f.avx512;
  }
  return false;
}

Isa initial_isa() {
  const CpuFeatures& f = cpu_features();
  Isa isa = best_isa(f);
  if (const char* env = std::getenv("SMOLVLM_ISA")) {
    Isa wanted;
    if (*env && std::strcmp(env, "auto") != 0) {
      if (!parse_isa(env, &wanted)) {
        std::fprintf(stderr, "smolvlm: SMOLVLM_ISA=%s is not one of scalar, neon, avx2, avx512; using %s\n", env, isa_name(isa));
      } else if (!supported(f, wanted)) {
        std::fprintf(stderr, "smolvlm: SMOLVLM_ISA=%s is not supported by this CPU; using %s\n", env, isa_name(isa));
      } else {
        isa = wanted;
      }
    }
  }
  return isa;
}

std::atomic<int>& isa_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

#if defined(__linux__)
bool read_long(const std::string& path, long* out) {
  std::ifstream in(path);
  long v;
  if (!(in >> v)) return false;
  *out = v;
  return true;
}

// CPUs allowed by a cgroup CPU quota (v2 cpu.max or v1 cfs quota), or 0 when unlimited.
int cgroup_cpu_limit() {
  std::ifstream v2("/sys/fs/cgroup/cpu.max");
  std::string quota;
  long period = 0;
  if (v2 >> quota >> period) {
    if (quota == "max" || period <= 0) return 0;
    const double q = std::atof(quota.c_str());
    return q > 0 ? std::max(1, static_cast<int>(std::ceil(q / static_cast<double>(period)))) : 0;
  }
  long q1 = 0, p1 = 0;
  if (read_long("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", &q1) && read_long("/sys/fs/cgroup/cpu/cpu.cfs_period_us", &p1) && q1 > 0 && p1 > 0) {
    return std::max(1, static_cast<int>(std::ceil(static_cast<double>(q1) / static_cast<double>(p1))));
  }
  return 0;
}
#endif

int detect_physical_cores() {
  int cores = 0;
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    std::set<std::pair<long, long>> seen;
    int logical = 0;
    bool topology = true;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
      if (!CPU_ISSET(cpu, &set)) continue;
      logical++;
      const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      long core = 0, pkg = 0;
      if (!read_long(base + "core_id", &core) || !read_long(base + "physical_package_id", &pkg)) topology = false;
      seen.insert({pkg, core});
    }
    cores = topology && !seen.empty() ? static_cast<int>(seen.size()) : logical;
  }
  const int quota = cgroup_cpu_limit();
  if (quota > 0 && (cores == 0 || quota < cores)) cores = quota;
#elif defined(__APPLE__)
  int n = 0;
  size_t len = sizeof(n);
  if (sysctlbyname("hw.physicalcpu", &n, &len, nullptr, 0) == 0) cores = n;
#endif
  if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores);
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  const CpuFeatures& f = cpu_features();
  for (Isa isa : {Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar}) {
    if (supported(f, isa)) out.push_back(isa);
  }
  return out;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Neon: return "neon";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "unknown";
}

bool parse_isa(const std::string& name, Isa* out) {
  for (Isa isa : {Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512}) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

Isa current_isa() { return static_cast<Isa>(isa_slot().load(std::memory_order_relaxed)); }

bool set_isa(Isa isa) {
  if (!supported(cpu_features(), isa)) return false;
  isa_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

int physical_cores() {
  static const int n = detect_physical_cores();
  return n;
}

}  // namespace smolvlm
