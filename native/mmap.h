#pragma once
#include <node_api.h>

#include <cstddef>

namespace smolvlm {
// mapFile(path) -> ArrayBuffer backed by a private mapping of the file (see mmap.cc).
napi_value MapFile(napi_env env, napi_callback_info info);
// releasePages(view) -> bytes given back: madvise(DONTNEED) on the whole pages under a typed
// array, only when it lies inside a mapping made by mapFile (anything else: 0, nothing done).
napi_value ReleasePages(napi_env env, napi_callback_info info);
// Asks for transparent huge pages under [p, p + bytes) (Linux; the 2 MiB-aligned interior only),
// for large fresh outputs that a kernel writes once: the first touch of each 4 KiB page is a page
// fault, and on virtual machines those dominate writing hundreds of MB. A hint: no-op elsewhere.
void advise_huge_pages(void* p, size_t bytes);
}  // namespace smolvlm
