// split_rows: a call's rows in two halves, one on the calling thread and one on XLA's
// intra-op pool (lstm_loop.cc's loops).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace seq2seq {

// A hint to the core that this thread is spinning (frees the pipeline for its sibling).
inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield");
#endif
}

// Runs fn(row_begin, row_end) over `rows` in two halves: the calling thread takes one, and
// a task on XLA's intra-op pool takes the other if it starts first. The caller never waits
// for a task that has not started: XLA may run this call on a pool thread while the pool's
// other threads are busy (two LSTMs at once, say), and then the task would never start.
// fn is only called after a half is claimed, and the caller waits for every claimed half,
// so a task that starts late touches nothing but the shared counters. Returns false if fn
// threw (out of memory), which must not unwind through XLA's C interface.
template <typename Fn>
bool split_rows(xla::ffi::ThreadPool& pool, int64_t rows, Fn fn) {
  struct Halves {
    std::atomic<int> next{0};      // the next half to claim
    std::atomic<int> finished{0};  // halves done
    std::atomic<bool> failed{false};
  };
  const bool alone = pool.num_threads() < 1 || rows < 2;
  const int64_t half = alone ? rows : rows / 2;
  auto halves = std::make_shared<Halves>();  // outlives this call if the task starts late
  auto run_halves = [halves, half, rows, &fn] {
    for (int which; (which = halves->next.fetch_add(1)) < 2;) {
      try {
        if (which == 0)
          fn(0, half);
        else if (half < rows)
          fn(half, rows);
      } catch (...) {
        halves->failed.store(true);
      }
      halves->finished.fetch_add(1, std::memory_order_release);
    }
  };
  if (!alone) {
    auto task = run_halves;  // a task starting after both halves are claimed does nothing
    pool.Schedule(std::move(task));
  }
  run_halves();
  // the other half is running on the pool: spin briefly, then let other threads have the core
  for (int spins = 0; halves->finished.load(std::memory_order_acquire) < 2; ++spins) {
    if (spins < 4096)
      spin_pause();
    else
      std::this_thread::yield();
  }
  return !halves->failed.load();
}

}  // namespace seq2seq
