// mapFile(path) -> ArrayBuffer over a read-only-in-practice, copy-on-write mapping of the whole
// file. Weights are then used in place from the page cache: no read into the heap, no float32
// copy, and pages the model never touches are never loaded. The mapping lives as long as any
// view of the ArrayBuffer does (the finalizer unmaps it).
#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif
#include <node_api.h>

#include <cstdint>
#include <mutex>
#include <algorithm>
#include <string>
#include <vector>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#endif

#include "mmap.h"

namespace smolvlm {
namespace {

#ifndef _WIN32
struct Mapping {
  void* addr;
  size_t size;
};

// Live mappings, so that releasePages never discards pages of ordinary (heap) memory.
std::mutex mappingsLock;
std::vector<Mapping*> mappings;

void Unmap(napi_env, void*, void* hint) {
  auto* m = static_cast<Mapping*>(hint);
  {
    std::lock_guard<std::mutex> lock(mappingsLock);
    mappings.erase(std::remove(mappings.begin(), mappings.end(), m), mappings.end());
  }
  munmap(m->addr, m->size);
  delete m;
}

size_t element_bytes(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: return 8;
    default: return 4;
  }
}

bool inside_mapping(uintptr_t begin, uintptr_t end) {
  std::lock_guard<std::mutex> lock(mappingsLock);
  for (const Mapping* m : mappings) {
    const auto base = reinterpret_cast<uintptr_t>(m->addr);
    if (begin >= base && end <= base + m->size) return true;
  }
  return false;
}
#endif

}  // namespace

napi_value MapFile(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], nullptr, 0, &len) != napi_ok) {
    napi_throw_type_error(env, nullptr, "smolvlm native mapFile: expects a path");
    return nullptr;
  }
  std::string path(len, '\0');
  napi_get_value_string_utf8(env, argv[0], path.data(), len + 1, &len);
#ifdef _WIN32
  napi_throw_error(env, "ENOSYS", "smolvlm native mapFile: not available on Windows");
  return nullptr;
#else
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    napi_throw_error(env, "EOPEN", (std::string("cannot open: ") + std::strerror(errno)).c_str());
    return nullptr;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    close(fd);
    napi_throw_error(env, "ESTAT", "cannot map an empty or unreadable file");
    return nullptr;
  }
  size_t size = static_cast<size_t>(st.st_size);
  // Private and writable so that a stray write only copies a page instead of faulting; the
  // engine never writes to weights.
  void* addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  if (addr == MAP_FAILED) {
    napi_throw_error(env, "EMMAP", (std::string("mmap failed: ") + std::strerror(errno)).c_str());
    return nullptr;
  }
  auto* mapping = new Mapping{addr, size};
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, addr, size, Unmap, mapping, &buffer) != napi_ok) {
    munmap(addr, size);
    delete mapping;
    napi_throw_error(env, "EEXTERNAL", "cannot wrap the mapping as an ArrayBuffer");
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(mappingsLock);
  mappings.push_back(mapping);
  return buffer;
#endif
}

napi_value ReleasePages(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  bool isTyped = false;
  if (argc < 1 || napi_is_typedarray(env, argv[0], &isTyped) != napi_ok || !isTyped) {
    napi_throw_type_error(env, nullptr, "smolvlm native releasePages: expects a typed array");
    return nullptr;
  }
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void* data = nullptr;
  napi_get_typedarray_info(env, argv[0], &type, &length, &data, nullptr, &offset);
  double released = 0;
#ifndef _WIN32
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const auto end = begin + length * element_bytes(type);
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first && inside_mapping(begin, end) && madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) == 0) {
    released = static_cast<double>(last - first);
  }
#endif
  napi_value out;
  napi_create_double(env, released, &out);
  return out;
}

void prepare_output_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(p), end = begin + bytes;
  const uintptr_t first = (begin + kHuge - 1) / kHuge * kHuge, last = end / kHuge * kHuge;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t pFirst = (begin + page - 1) / page * page, pLast = end / page * page;
  if (pLast > pFirst) madvise(reinterpret_cast<void*>(pFirst), pLast - pFirst, MADV_POPULATE_WRITE);
#endif
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace smolvlm
