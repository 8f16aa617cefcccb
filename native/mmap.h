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
