// A small fork-join thread pool: the calling thread and (threads - 1) workers take task indices
// from a shared counter until all are done. Sized to the physical cores, or SMOLVLM_THREADS.
#pragma once
#include <cstddef>

namespace smolvlm {

using TaskFn = void (*)(void* ctx, size_t task);

// Threads that run tasks, the caller included.
int pool_threads();

// Runs fn(ctx, i) for every i in [0, tasks) and returns when all have finished. Tasks are handed
// out dynamically, so uneven tasks balance. Runs serially when the pool is busy (a call from a
// second JavaScript thread) or when there is one task or one thread.
void parallel_for(size_t tasks, TaskFn fn, void* ctx);

// Convenience for callers outside the per-ISA code: any callable taking a size_t.
template <class F>
void parallel_for_each(size_t tasks, F& f) {
  parallel_for(tasks, [](void* c, size_t i) { (*static_cast<F*>(c))(i); }, &f);
}

}  // namespace smolvlm
