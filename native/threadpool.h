// A small fork-join thread pool: the calling thread and (threads - 1) workers take task indices
// from a shared counter until all are done. Sized to the physical cores, or SMOLVLM_THREADS.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace smolvlm {

using TaskFn = void (*)(void* ctx, size_t task);

// Threads that run tasks, the caller included.
int pool_threads();

// Runs fn(ctx, i) for every i in [0, tasks) and returns when all have finished. Tasks are handed
// out dynamically, so uneven tasks balance. Runs serially when the pool is busy (a call from a
// second JavaScript thread) or when there is one task or one thread.
void parallel_for(size_t tasks, TaskFn fn, void* ctx);

// Chunks [0, n) as one contiguous range per thread, for streaming loops: task t takes chunks from
// the front of range t, then from the back of the others' until every range is used up. A
// thread claims its own chunks with a compare-and-swap on a line no other thread touches until
// it comes to help, so claims are cheap and chunks can be short, and the last chunks of a call
// are shared out instead of one thread finishing a long one alone. Run tasks() tasks, calling
// run(t, f), which calls f(chunk) for each chunk it claims.
class RangeChunks {
 public:
  RangeChunks(size_t n, size_t threads) : count_(threads == 0 ? 1 : threads > kMax ? kMax : threads) {
    for (size_t t = 0; t < count_; t++) ranges_[t].bounds.store(pack(n * t / count_, n * (t + 1) / count_), std::memory_order_relaxed);
  }
  size_t tasks() const { return count_; }
  template <class F>
  void run(size_t t, F&& f) {
    size_t c;
    while (take(ranges_[t], true, &c)) f(c);
    for (size_t i = 1; i < count_; i++) {
      Range& r = ranges_[(t + i) % count_];
      while (take(r, false, &c)) f(c);
    }
  }

 private:
  static constexpr size_t kMax = 64;
  struct alignas(64) Range {
    std::atomic<uint64_t> bounds{0};  // front in the low 32 bits, back (exclusive) in the high (n < 2^32)
  };
  static uint64_t pack(uint64_t front, uint64_t back) { return front | (back << 32); }
  // The front chunk (owner) or the back one (helper) of r, if any is left.
  static bool take(Range& r, bool front, size_t* c) {
    uint64_t b = r.bounds.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t lo = b & 0xffffffffu, hi = b >> 32;
      if (lo >= hi) return false;
      const uint64_t next = front ? pack(lo + 1, hi) : pack(lo, hi - 1);
      if (r.bounds.compare_exchange_weak(b, next, std::memory_order_relaxed)) {
        *c = front ? lo : hi - 1;
        return true;
      }
    }
  }
  size_t count_;
  Range ranges_[kMax];
};

// Convenience for callers outside the per-ISA code: any callable taking a size_t.
template <class F>
void parallel_for_each(size_t tasks, F& f) {
  parallel_for(tasks, [](void* c, size_t i) { (*static_cast<F*>(c))(i); }, &f);
}

// Runs f(chunk) for every chunk in [0, chunks), each pool thread over its own range (RangeChunks).
template <class F>
void parallel_chunks(size_t chunks, F&& f) {
  RangeChunks ranges(chunks, static_cast<size_t>(pool_threads()));
  auto thread = [&](size_t t) { ranges.run(t, f); };
  parallel_for_each(ranges.tasks(), thread);
}

// The chunks of several parts (weights sharing one input) in one parallel_chunks pass, in order:
// part i owns chunks [first[i], first[i + 1]); f(i, chunk within part i).
template <class F>
void parallel_part_chunks(const size_t* first, int parts, F&& f) {
  parallel_chunks(first[parts], [&](size_t t) {
    int i = 0;
    while (t >= first[i + 1]) i++;
    f(i, t - first[i]);
  });
}

}  // namespace smolvlm
