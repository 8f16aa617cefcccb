#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SMOLVLM_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define SMOLVLM_PAUSE() __asm__ __volatile__("yield")
#else
#define SMOLVLM_PAUSE() ((void)0)
#endif

namespace smolvlm {
namespace {

int configured_threads() {
  int n = physical_cores();
  if (const char* env = std::getenv("SMOLVLM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1 && v <= 1024) {
      n = static_cast<int>(v);
    } else {
      std::fprintf(stderr, "smolvlm: ignoring SMOLVLM_THREADS=%s (want a whole number from 1 to 1024)\n", env);
    }
  }
  return n;
}

// How long an idle worker polls for the next job before sleeping on the condition variable.
// Model code issues many small kernels back to back (decoding), and waking a sleeping thread
// costs tens of microseconds, so a short spin pays for itself.
std::chrono::microseconds spin_time() {
  long us = 200;
  if (const char* env = std::getenv("SMOLVLM_SPIN_US")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && v >= 0) us = v;
  }
  return std::chrono::microseconds(us);
}

// The job in flight is one atomic word: generation (16 bits) | task count (24) | next task (24).
// A thread claims a task by compare-and-swap, which fails if the generation has moved on, so a
// worker that wakes late never touches a newer job; the job's function and context are read only
// after a successful claim, and the caller waits only for tasks that were actually claimed. So
// when a worker is slow to be scheduled (a busy machine) the caller simply runs every task itself.
class Pool {
 public:
  explicit Pool(int threads) : threads_(threads), spin_(spin_time()) {
    for (int i = 1; i < threads_; i++) workers_.emplace_back([this] { worker(); });
  }

  int threads() const { return threads_; }

  void run(size_t tasks, TaskFn fn, void* ctx) {
    if (tasks == 0) return;
    if (threads_ <= 1 || tasks == 1 || !busy_.try_lock()) {
      for (size_t i = 0; i < tasks; i++) fn(ctx, i);
      return;
    }
    for (size_t base = 0; base < tasks; base += kMaxTasks) {
      const size_t n = std::min(kMaxTasks, tasks - base);
      if (base == 0) {
        run_job(n, fn, ctx);
      } else {
        // More tasks than one job word can count: run the rest as further jobs (never happens
        // with the kernels' task counts).
        struct Offset {
          TaskFn fn;
          void* ctx;
          size_t base;
        } off{fn, ctx, base};
        run_job(n, [](void* c, size_t i) { auto* o = static_cast<Offset*>(c); o->fn(o->ctx, o->base + i); }, &off);
      }
    }
    busy_.unlock();
  }

 private:
  static constexpr size_t kMaxTasks = (size_t{1} << 24) - 1;
  static uint64_t gen_of(uint64_t s) { return s >> 48; }
  static uint64_t count_of(uint64_t s) { return (s >> 24) & 0xffffffu; }
  static uint64_t next_of(uint64_t s) { return s & 0xffffffu; }

  void run_job(size_t tasks, TaskFn fn, void* ctx) {
    fn_ = fn;
    ctx_ = ctx;
    done_.store(0, std::memory_order_relaxed);
    const uint64_t gen = (gen_of(state_.load(std::memory_order_relaxed)) + 1) & 0xffffu;
    {
      std::lock_guard<std::mutex> lock(mu_);
      state_.store((gen << 48) | (static_cast<uint64_t>(tasks) << 24), std::memory_order_release);
    }
    cv_.notify_all();
    work(gen);
    unsigned spins = 0;
    while (done_.load(std::memory_order_acquire) < tasks) {
      if (++spins < 4096) {
        SMOLVLM_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
  }

  // Claims and runs tasks of generation `gen` until none are left.
  void work(uint64_t gen) {
    uint64_t s = state_.load(std::memory_order_acquire);
    for (;;) {
      if (gen_of(s) != gen || next_of(s) >= count_of(s)) return;
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        fn_(ctx_, static_cast<size_t>(next_of(s)));
        done_.fetch_add(1, std::memory_order_release);
        s = state_.load(std::memory_order_acquire);
      }
    }
  }

  void worker() {
    uint64_t seen = gen_of(state_.load(std::memory_order_acquire));
    for (;;) {
      // Poll first, then sleep.
      const auto until = std::chrono::steady_clock::now() + spin_;
      unsigned polls = 0;
      while (gen_of(state_.load(std::memory_order_acquire)) == seen) {
        SMOLVLM_PAUSE();
        if ((++polls & 63) == 0 && std::chrono::steady_clock::now() >= until) {
          std::unique_lock<std::mutex> lock(mu_);
          cv_.wait(lock, [&] { return gen_of(state_.load(std::memory_order_acquire)) != seen; });
          break;
        }
      }
      seen = gen_of(state_.load(std::memory_order_acquire));
      work(seen);
    }
  }

  const int threads_;
  const std::chrono::microseconds spin_;
  std::vector<std::thread> workers_;
  std::mutex busy_;  // held by the thread whose job is running
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> state_{0};
  std::atomic<size_t> done_{0};
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
};

Pool& pool() {
  // Never destroyed: worker threads are parked for the life of the process, and destroying a
  // joinable std::thread at exit would terminate it.
  static Pool* p = new Pool(configured_threads());
  return *p;
}

}  // namespace

int pool_threads() { return pool().threads(); }

void parallel_for(size_t tasks, TaskFn fn, void* ctx) { pool().run(tasks, fn, ctx); }

}  // namespace smolvlm
