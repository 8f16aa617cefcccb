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

// Streaming loops (the few-row linears) want each thread's share of the rows to be one contiguous
// stretch: the hardware prefetchers then keep one stream going instead of restarting at every
// task. Tasks claimed from the shared counter by T threads at the same pace go to thread i as
// i, i + T, i + 2T, ...; StripedTasks renumbers them so that those are consecutive chunks. Run
// padded() tasks and map each index to its chunk; indices that map past the last chunk do
// nothing. A slow or busy thread only changes who runs which chunk, never which chunks run.
struct StripedTasks {
  size_t chunks, threads, per;
  StripedTasks(size_t chunks_, size_t threads_)
      : chunks(chunks_), threads(threads_ ? threads_ : 1), per((chunks_ + threads - 1) / threads) {}
  size_t padded() const { return per * threads; }
  // The chunk task t runs, or false when it runs none.
  bool chunk(size_t t, size_t* c) const {
    *c = (t % threads) * per + t / threads;
    return *c < chunks;
  }
};

// Convenience for callers outside the per-ISA code: any callable taking a size_t.
template <class F>
void parallel_for_each(size_t tasks, F& f) {
  parallel_for(tasks, [](void* c, size_t i) { (*static_cast<F*>(c))(i); }, &f);
}

}  // namespace smolvlm
