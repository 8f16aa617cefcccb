#pragma once
#include <node_api.h>

#include <cstddef>

namespace smolvlm {
// mapFile(path) -> ArrayBuffer backed by a private mapping of the file (see mmap.cc).
napi_value MapFile(napi_env env, napi_callback_info info);
// releasePages(view) -> bytes given back: madvise(DONTNEED) on the whole pages under a typed
// array, only when it lies inside a mapping made by mapFile (anything else: 0, nothing done).
napi_value ReleasePages(napi_env env, napi_callback_info info);
// Readies [p, p + bytes), a large fresh output that a kernel writes once: asks for transparent
// huge pages (the 2 MiB-aligned interior) and prefaults the whole pages in one
// madvise(MADV_POPULATE_WRITE), since a first touch per 4 KiB page is a page fault, and on virtual
// machines those dominate writing hundreds of MB. Linux only, hints only: no-op elsewhere.
void prepare_output_pages(void* p, size_t bytes);
}  // namespace smolvlm
