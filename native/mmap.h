#pragma once
#include <node_api.h>

namespace smolvlm {
// mapFile(path) -> ArrayBuffer backed by a private mapping of the file (see mmap.cc).
napi_value MapFile(napi_env env, napi_callback_info info);
}  // namespace smolvlm
