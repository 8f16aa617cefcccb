#pragma once
#include <node_api.h>

namespace smolvlm {
// mapFile(path) -> ArrayBuffer backed by a private mapping of the file (see mmap.cc).
napi_value MapFile(napi_env env, napi_callback_info info);
// releasePages(view) -> bytes given back: madvise(DONTNEED) on the whole pages under a typed
// array, only when it lies inside a mapping made by mapFile (anything else: 0, nothing done).
napi_value ReleasePages(napi_env env, napi_callback_info info);
}  // namespace smolvlm
