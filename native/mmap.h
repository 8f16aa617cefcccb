#pragma once
#include <node_api.h>

#include <cstddef>

namespace smolvlm {
// mapFile(path) -> ArrayBuffer backed by a private mapping of the file (see mmap.cc).
napi_value MapFile(napi_env env, napi_callback_info info);
// allocPages(bytes) -> ArrayBuffer over fresh zeroed anonymous memory that starts on a 2 MiB
// boundary and asks for transparent huge pages (Linux; a plain ArrayBuffer elsewhere): for
// weights made at load (repacked q4), which decoding streams once per token.
napi_value AllocPages(napi_env env, napi_callback_info info);
// dropFileCache(path) -> whether it did: writes the file's dirty pages out, then drops its pages
// from the page cache (posix_fadvise DONTNEED; Linux only). For a file this package just wrote:
// the next mapFile then reads it back in 2 MiB folios, where writing left 4 KiB ones.
napi_value DropFileCache(napi_env env, napi_callback_info info);
// settlePageCache(view, path) -> { state, blocks, small, repaired }: makes the page cache hold the
// file mapFile mapped (view: that whole mapping) in 2 MiB folios, which the mapping then maps with
// one huge page each. Writing a file (a download, cp) leaves its cache in 4 KiB folios, and so
// does reading it in an order the kernel's readahead does not follow (a tenth of a 500M
// checkpoint after one cold run here); they stay until evicted, and each first touch then
// faults per 4 KiB (BENCHMARKS.md section 19). Maps each whole 2 MiB block of the file in turn,
// reading in what the cache lacks, tells from PAGEMAP_SCAN (Linux 6.7+) whether one huge page
// maps it, and unmaps it again; a block in small folios is written out (if dirty), dropped from
// the cache and read back, which makes it one 2 MiB folio (pages another process maps cannot be
// dropped). If the first block read back comes back small, no more are tried, and after 8 small
// blocks and no huge one the rest is left alone: the filesystem or the free memory makes no
// large folios. Costs about 16 ms per GB when the cache is already right. state: "huge"
// (nothing to do), "repaired" (some blocks read back), "small" (more than an eighth of the
// blocks left small) or "unknown" (not Linux, a kernel before 6.7, not a mapFile mapping).
napi_value SettlePageCache(napi_env env, napi_callback_info info);
// copyAndRelease(src, dst) -> whether src lay in a mapFile mapping: then dst <- src's bytes and
// the 2 MiB blocks of the mapping around src are unmapped (MADV_DONTNEED; the page cache keeps
// them). For small tensors read once at load: where the file is mapped 2 MiB at a time, a view
// would keep whole blocks of their neighbours resident. A pread would not do: it fills a cold page
// cache with 4 KiB folios, which no later mapping can map 2 MiB at a time.
napi_value CopyAndRelease(napi_env env, napi_callback_info info);
// releasePages(view) -> bytes given back: madvise(DONTNEED) on the whole pages under a typed
// array, only when it lies inside a mapping made by mapFile (anything else: 0, nothing done).
napi_value ReleasePages(napi_env env, napi_callback_info info);
// Readies [p, p + bytes), a large fresh output that a kernel writes once: asks for transparent
// huge pages (the 2 MiB-aligned interior) and prefaults the whole pages in one
// madvise(MADV_POPULATE_WRITE), since a first touch per 4 KiB page is a page fault, and on virtual
// machines those dominate writing hundreds of MB. Linux only, hints only: no-op elsewhere.
void prepare_output_pages(void* p, size_t bytes);
// A typed array's data and size in bytes; false when v is not a typed array.
bool typed_array_bytes(napi_env env, napi_value v, char** data, size_t* bytes);
}  // namespace smolvlm
