// mapFile(path) -> ArrayBuffer over a read-only-in-practice, copy-on-write mapping of the whole
// file. Weights are then used in place from the page cache: no read into the heap, no float32
// copy, and pages the model never touches are never loaded. The mapping lives as long as any
// view of the ArrayBuffer does (the finalizer unmaps it). It is placed and advised so that the
// kernel can map the file 2 MiB at a time (map_aligned): a first pass then faults 500 times
// instead of 250,000, and decoding streams the weights without a TLB miss per 4 KiB
// (BENCHMARKS.md section 16).
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
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#endif

#include "mmap.h"

namespace smolvlm {

// A transparent huge page: it backs only a range aligned to its size.
constexpr size_t kHugePage = size_t{2} << 20;

namespace {

size_t element_bytes(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: return 8;
    default: return 4;
  }
}

// v as a string; false (nothing thrown) when it is not one.
bool string_value(napi_env env, napi_value v, std::string* out) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) return false;
  out->assign(len, '\0');
  napi_get_value_string_utf8(env, v, out->data(), len + 1, &len);
  return true;
}

// The first argument as a path; throws and returns false when it is not a string.
bool path_arg(napi_env env, napi_callback_info info, const char* fn, std::string* path) {
  napi_value argv[1];
  size_t argc = 1;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc < 1 || !string_value(env, argv[0], path)) {
    napi_throw_type_error(env, nullptr, (std::string("smolvlm native ") + fn + ": expects a path").c_str());
    return false;
  }
  return true;
}

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

// The mapFile mapping that holds [begin, end), or null.
const Mapping* mapping_of(uintptr_t begin, uintptr_t end) {
  std::lock_guard<std::mutex> lock(mappingsLock);
  for (const Mapping* m : mappings) {
    const auto base = reinterpret_cast<uintptr_t>(m->addr);
    if (begin >= base && end <= base + m->size) return m;
  }
  return nullptr;
}

bool inside_mapping(uintptr_t begin, uintptr_t end) { return mapping_of(begin, end) != nullptr; }

// `bytes` (whole pages) of fresh anonymous read-write memory starting on a 2 MiB boundary, or
// MAP_FAILED with errno set: one huge page more is mapped, then the slack on either side trimmed.
void* map_aligned_anonymous(size_t bytes) {
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t size = (bytes + page - 1) / page * page;
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return MAP_FAILED;
  const auto base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (base + kHugePage - 1) / kHugePage * kHugePage;
  if (start > base) munmap(raw, start - base);
  const uintptr_t end = base + size + kHugePage;
  if (end > start + size) munmap(reinterpret_cast<void*>(start + size), end - start - size);
  return reinterpret_cast<void*>(start);
}

// mmap of a whole file at a 2 MiB-aligned address, with MADV_HUGEPAGE. A file page can only be
// mapped as part of a 2 MiB page when its address and its file offset agree modulo 2 MiB, and the
// kernel then does so for page-cache folios of that size, which reading the file through such a
// mapping creates (mm/filemap.c readahead for VM_HUGEPAGE). A 500M checkpoint then takes about
// 500 faults instead of 250,000, and decoding streams its weights without a TLB miss per 4 KiB.
// Where the kernel or the filesystem keeps no such folios, this is an ordinary mapping.
void* map_aligned(int fd, size_t size) {
  void* reserved = map_aligned_anonymous(size);
  if (reserved == MAP_FAILED) return mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  // The file replaces the reservation, at the same address.
  void* addr = mmap(reserved, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
  if (addr == MAP_FAILED) {
    const int error = errno;  // for the caller's message
    munmap(reserved, size);
    errno = error;
    return MAP_FAILED;
  }
#ifdef MADV_HUGEPAGE
  madvise(addr, size, MADV_HUGEPAGE);
#endif
  return addr;
}
#endif

}  // namespace

// A typed array's data and size in bytes; false when v is not a typed array.
bool typed_array_bytes(napi_env env, napi_value v, char** data, size_t* bytes) {
  bool isTyped = false;
  if (napi_is_typedarray(env, v, &isTyped) != napi_ok || !isTyped) return false;
  napi_typedarray_type type;
  size_t length = 0;
  void* p = nullptr;
  napi_get_typedarray_info(env, v, &type, &length, &p, nullptr, nullptr);
  *data = static_cast<char*>(p);
  *bytes = length * element_bytes(type);
  return true;
}

napi_value MapFile(napi_env env, napi_callback_info info) {
  std::string path;
  if (!path_arg(env, info, "mapFile", &path)) return nullptr;
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
  // engine never writes to weights. Placed on a 2 MiB boundary and advised huge pages: where the
  // page cache holds the file in 2 MiB folios, each fault then maps 2 MiB (see map_aligned).
  void* addr = map_aligned(fd, size);
  close(fd);  // the mapping keeps the file
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

namespace {
// What settlePageCache found (mmap.h).
struct CacheReport {
  const char* state = "unknown";
  int blocks = 0, small = 0, repaired = 0;
};
}  // namespace

#ifdef __linux__
namespace {

// PAGEMAP_SCAN (Linux 6.7): which pages of a range this process maps, and whether with a huge
// page. Declared here with the kernel's ABI, since system headers may predate it.
struct PageRegion {
  uint64_t start, end, categories;
};
struct PagemapScanArg {
  uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask, category_anyof_mask, return_mask;
};
constexpr unsigned long kPagemapScan = _IOWR('f', 16, PagemapScanArg);
constexpr uint64_t kPageIsHuge = 1u << 6;
constexpr int kMadvPopulateRead = 22;  // MADV_POPULATE_READ (Linux 5.14)

enum class BlockPages { Huge, Small, Unknown };

// Maps blocks [0, n) of a run of 2 MiB blocks of a mapFile mapping (reading in what the page cache
// lacks), sets kinds[i] to whether a single huge page maps block i, and unmaps them again (the page
// cache keeps them). One populate, scan and unmap per run: per block, they cost more than the
// mapping itself where the cache is already right.
bool map_and_classify(int pagemap, char* first, size_t n, BlockPages* kinds) {
  const size_t bytes = n * kHugePage;
  if (madvise(first, bytes, kMadvPopulateRead) != 0) return false;
  std::vector<PageRegion> regions(n);  // huge pages in separate blocks are at most n regions
  PagemapScanArg scan{};
  scan.size = sizeof scan;
  scan.start = reinterpret_cast<uint64_t>(first);
  scan.end = scan.start + bytes;
  scan.vec = reinterpret_cast<uint64_t>(regions.data());
  scan.vec_len = n;
  scan.category_mask = kPageIsHuge;  // report only the pages mapped huge
  scan.return_mask = kPageIsHuge;
  const long found = ioctl(pagemap, kPagemapScan, &scan);
  madvise(first, bytes, MADV_DONTNEED);
  if (found < 0) return false;
  std::fill(kinds, kinds + n, BlockPages::Small);
  for (long r = 0; r < found; r++) {
    // A region is whole huge pages, so whole blocks of the aligned run.
    for (uint64_t a = regions[r].start; a < regions[r].end; a += kHugePage) kinds[(a - scan.start) / kHugePage] = BlockPages::Huge;
  }
  return true;
}

// Drops one 2 MiB block of the file from the page cache (its dirty pages written out first) and
// reads it back through the mapping: whether it now comes back as one huge folio.
bool reread_block(int fd, int pagemap, char* addr, size_t b) {
  const auto offset = static_cast<off_t>(b * kHugePage);
  if (sync_file_range(fd, offset, kHugePage, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0) return false;
  if (posix_fadvise(fd, offset, kHugePage, POSIX_FADV_DONTNEED) != 0) return false;
  BlockPages kind;
  return map_and_classify(pagemap, addr + b * kHugePage, 1, &kind) && kind == BlockPages::Huge;
}

// See settlePageCache in mmap.h. addr is a mapFile mapping (2 MiB-aligned) of the file at path.
CacheReport settle_page_cache(char* addr, size_t size, const std::string& path) {
  CacheReport report;
  const int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (pagemap < 0) return report;
  int fd = -1;
  bool rereadHelps = true;  // until a block read back comes back small
  constexpr size_t kRun = 32;  // blocks per populate (64 MiB mapped at a time)
  const size_t blocks = size / kHugePage;
  BlockPages kinds[kRun];
  bool done = false;
  for (size_t b0 = 0; b0 < blocks && !done; b0 += kRun) {
    const size_t n = std::min(kRun, blocks - b0);
    if (!map_and_classify(pagemap, addr + b0 * kHugePage, n, kinds)) break;
    for (size_t i = 0; i < n && !done; i++) {
      report.blocks++;
      if (kinds[i] == BlockPages::Huge) continue;
      if (rereadHelps && fd < 0) fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      rereadHelps = rereadHelps && fd >= 0 && reread_block(fd, pagemap, addr, b0 + i);
      if (rereadHelps) {
        report.repaired++;
        continue;
      }
      report.small++;
      // No block huge, and reading one back does not help: this filesystem (or this machine's
      // free memory) makes no 2 MiB folios. Leave the rest to be read as it is used.
      done = report.small == report.blocks && report.blocks >= 8;
    }
  }
  if (done) report.state = "small";
  else if (report.blocks == static_cast<int>(blocks) && blocks > 0) report.state = report.small * 8 > report.blocks ? "small" : report.repaired > 0 ? "repaired" : "huge";
  if (fd >= 0) close(fd);
  close(pagemap);
  return report;
}

}  // namespace
#endif

napi_value SettlePageCache(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char* data = nullptr;
  size_t bytes = 0;
  std::string path;
  if (argc < 2 || !typed_array_bytes(env, argv[0], &data, &bytes) || !string_value(env, argv[1], &path)) {
    napi_throw_type_error(env, nullptr, "smolvlm native settlePageCache: expects the mapFile view of a whole file and its path");
    return nullptr;
  }
  CacheReport r;
#ifdef __linux__
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const Mapping* m = mapping_of(begin, begin + bytes);
  if (m != nullptr && m->addr == data && m->size == bytes && begin % kHugePage == 0) r = settle_page_cache(data, bytes, path);
#else
  (void)data;
  (void)bytes;
#endif
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_string_utf8(env, r.state, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, out, "state", v);
  const std::pair<const char*, int> counts[] = {{"blocks", r.blocks}, {"small", r.small}, {"repaired", r.repaired}};
  for (const auto& [name, n] : counts) {
    napi_create_int32(env, n, &v);
    napi_set_named_property(env, out, name, v);
  }
  return out;
}

napi_value AllocPages(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  double requested = 0;
  if (argc < 1 || napi_get_value_double(env, argv[0], &requested) != napi_ok || !(requested >= 1) || requested > 0x1p46) {
    napi_throw_range_error(env, nullptr, "smolvlm native allocPages: expects a byte count from 1 to 2^46");
    return nullptr;
  }
  const size_t bytes = static_cast<size_t>(requested);
#ifdef _WIN32
  napi_value buffer;
  void* data = nullptr;
  napi_create_arraybuffer(env, bytes, &data, &buffer);
  return buffer;
#else
  // On a 2 MiB boundary, and a whole number of huge pages, so that huge pages can back all of it.
  const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* addr = map_aligned_anonymous(size);
  if (addr == MAP_FAILED) {
    napi_throw_error(env, "ENOMEM", (std::string("cannot allocate ") + std::to_string(bytes) + " bytes: " + std::strerror(errno)).c_str());
    return nullptr;
  }
#ifdef MADV_HUGEPAGE
  madvise(addr, size, MADV_HUGEPAGE);
#endif
  auto* mapping = new Mapping{addr, size};
  napi_value buffer;
  // Unmap's finalizer, as for a file (these pages are not in `mappings`, which it then leaves alone).
  if (napi_create_external_arraybuffer(env, addr, bytes, Unmap, mapping, &buffer) != napi_ok) {
    munmap(addr, size);
    delete mapping;
    napi_throw_error(env, "EEXTERNAL", "cannot wrap the pages as an ArrayBuffer");
    return nullptr;
  }
  return buffer;
#endif
}

napi_value DropFileCache(napi_env env, napi_callback_info info) {
  std::string path;
  if (!path_arg(env, info, "dropFileCache", &path)) return nullptr;
  bool dropped = false;
#if defined(__linux__) && defined(POSIX_FADV_DONTNEED)
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    // Only clean pages can be dropped: write the file's dirty pages out first.
    dropped = fdatasync(fd) == 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
    close(fd);
  }
#endif
  napi_value out;
  napi_get_boolean(env, dropped, &out);
  return out;
}

napi_value CopyAndRelease(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  size_t argc = 2;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char *src = nullptr, *dst = nullptr;
  size_t bytes = 0, dstBytes = 0;
  if (argc < 2 || !typed_array_bytes(env, argv[0], &src, &bytes) || !typed_array_bytes(env, argv[1], &dst, &dstBytes)) {
    napi_throw_type_error(env, nullptr, "smolvlm native copyAndRelease: expects two typed arrays (source, destination)");
    return nullptr;
  }
  if (bytes != dstBytes) {
    napi_throw_range_error(env, nullptr, "smolvlm native copyAndRelease: source and destination differ in size");
    return nullptr;
  }
  bool released = false;
#ifndef _WIN32
  const auto begin = reinterpret_cast<uintptr_t>(src);
  const Mapping* m = mapping_of(begin, begin + bytes);
  if (m != nullptr) {
    std::memcpy(dst, src, bytes);
    // The 2 MiB blocks around the copy, within the mapping. A neighbour in use faults its block
    // back in at the next read (once, 2 MiB at a time); the page cache keeps every folio.
    const auto base = reinterpret_cast<uintptr_t>(m->addr);
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t first = std::max(base, begin / kHugePage * kHugePage);
    const uintptr_t last = std::min((base + m->size) / page * page, (begin + bytes + kHugePage - 1) / kHugePage * kHugePage);
    released = last <= first || madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) == 0;
  }
#endif
  napi_value result;
  napi_get_boolean(env, released, &result);
  return result;
}

napi_value ReleasePages(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  char* data = nullptr;
  size_t bytes = 0;
  if (argc < 1 || !typed_array_bytes(env, argv[0], &data, &bytes)) {
    napi_throw_type_error(env, nullptr, "smolvlm native releasePages: expects a typed array");
    return nullptr;
  }
  double released = 0;
#ifndef _WIN32
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const auto end = begin + bytes;
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
  const auto begin = reinterpret_cast<uintptr_t>(p), end = begin + bytes;
  const uintptr_t first = (begin + kHugePage - 1) / kHugePage * kHugePage, last = end / kHugePage * kHugePage;
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
