// SPDX-License-Identifier: Apache-2.0
// grpo/model/thread_pool.hpp: the small fork-join pool the native transformer runs on. One
// parallel_for at a time hands out task indices from an atomic counter to the calling thread and
// whichever of the size() - 1 workers join in time; the caller waits only for those. Workers spin briefly before sleeping, because a transformer step issues
// hundreds of short parallel regions back to back and a futex wake-up would cost as much as a task.
// Results never depend on the thread count: callers give each output element to exactly one task.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "grpo/error.hpp"

namespace grpo::model {

class thread_pool {
 public:
  /// A pool of `threads` threads in all, the caller included (0: std::thread::hardware_concurrency()).
  explicit thread_pool(std::size_t threads = 0) {
    if (threads == 0) threads = std::max<std::size_t>(1, std::thread::hardware_concurrency());
    workers_.reserve(threads - 1);
    for (std::size_t w = 1; w < threads; ++w) workers_.emplace_back([this, w] { work(w); });
  }

  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  ~thread_pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_.store(true, std::memory_order_release);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  /// Threads in all, the caller included.
  std::size_t size() const { return workers_.size() + 1; }

  /// Calls fn(task, thread) for every task in [0, tasks), thread in [0, size()) naming the thread
  /// that runs it (for per-thread scratch buffers). Returns when all have run; the first exception
  /// a task throws is rethrown here. A call from inside one of this pool's tasks runs inline on
  /// that thread with that task's thread index. One caller at a time: a parallel_for from a second
  /// thread while one is running throws grpo::error rather than racing for the workers.
  template <class F>
  void parallel_for(std::size_t tasks, F&& fn) {
    if (tasks == 0) return;
    if (current().pool == this) {
      for (std::size_t i = 0; i < tasks; ++i) fn(i, current().thread);
      return;
    }
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    GRPO_CHECK(busy.owns_lock(), error, "thread_pool: parallel_for called from two threads at once");
    if (workers_.empty() || tasks == 1) {
      const scope inside(this, 0);
      for (std::size_t i = 0; i < tasks; ++i) fn(i, std::size_t{0});
      return;
    }
    using fn_type = std::remove_reference_t<F>;
    job_ = {
        [](void* context, std::size_t task, std::size_t thread) { (*static_cast<fn_type*>(context))(task, thread); },
        const_cast<void*>(static_cast<const void*>(&fn)), tasks};
    next_.store(0, std::memory_order_relaxed);
    finished_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    ticket_.store(0, std::memory_order_release);  // opens the job: workers may join from here on
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_tasks(0);
    // Close the job and wait only for the workers that joined it: a worker that is asleep or
    // descheduled (another process on its core) never holds up the caller, which has already
    // run every task nobody took.
    const std::uint64_t joined = ticket_.fetch_or(closed, std::memory_order_acq_rel) & ~closed;
    for (int spin = 0; finished_.load(std::memory_order_acquire) != joined; ++spin)
      if (spin > 64) std::this_thread::yield();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct job {
    void (*call)(void*, std::size_t, std::size_t) = nullptr;
    void* context = nullptr;
    std::size_t tasks = 0;
  };

  // The pool and thread index of the task the calling thread is running, if any.
  struct location {
    const thread_pool* pool = nullptr;
    std::size_t thread = 0;
  };
  static location& current() {
    thread_local location here;
    return here;
  }
  struct scope {
    location saved;
    scope(const thread_pool* pool, std::size_t thread) : saved(current()) { current() = {pool, thread}; }
    ~scope() { current() = saved; }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
  };

  std::vector<std::thread> workers_;
  std::mutex busy_;   // held by the thread whose parallel_for owns the workers
  std::mutex mutex_;  // guards sleeping workers' wake-up
  std::condition_variable wake_;
  static constexpr std::uint64_t closed = std::uint64_t{1} << 63;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::uint64_t> ticket_{closed};  // workers that joined the current job, | closed once shut
  std::atomic<std::uint64_t> finished_{0};     // workers that joined and are done
  std::atomic<std::size_t> next_{0};
  std::atomic<bool> stopping_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
  job job_;

  void run_tasks(std::size_t thread) {
    const scope inside(this, thread);
    for (std::size_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < job_.tasks;) {
      try {
        job_.call(job_.context, i, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  void work(std::size_t thread) {
    std::uint64_t seen = 0;
    while (true) {
      // Poll for about 100 microseconds before sleeping: the back-to-back regions of one
      // transformer step then never pay a futex wake-up, and an idle pool still goes to sleep.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
      for (int spin = 1; generation_.load(std::memory_order_acquire) == seen; ++spin)
        if (spin % 64 == 0 && std::chrono::steady_clock::now() > deadline) break;
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stopping_.load(std::memory_order_acquire)) return;
      // Joining synchronizes with the caller's opening of the job (its job_ is then visible); a
      // join after the close touches nothing else. Every successful join is matched by one finish.
      if ((ticket_.fetch_add(1, std::memory_order_acq_rel) & closed) != 0) continue;
      run_tasks(thread);
      finished_.fetch_add(1, std::memory_order_release);
    }
  }
};

}  // namespace grpo::model
