#pragma once
// The key pool (SPEC section 3.4, issue 13): PROVISION_KEY_POOL pairs of the default key type
// generated ahead on a thread of their own at idle CPU priority (SCHED_IDLE: it runs only when
// nothing else wants the CPU), so that a request is answered without waiting for key generation.
//
// Private keys waiting in the pool are held only in locked memory (mlock: never swapped to the SD
// card), left out of core dumps and zeroed in forked children (the exec plugin forks); they are
// wiped when taken and when the pool is destroyed, and never written anywhere. When memory cannot
// be locked (RLIMIT_MEMLOCK, LimitMEMLOCK= in the unit) the pool keeps the keys it could lock and
// no more, saying so once in the log: with none, it is off and requests generate as without it.
// A key left in swappable memory for hours could reach the swap file on the SD card, where no
// wipe reaches it; generating per request is only slower.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "keystore/key_pair.hpp"

namespace pa {

// Bytes in pages of their own, locked into RAM, excluded from core dumps and zeroed in a forked
// child (madvise), wiped and unlocked when destroyed. Move-only.
class LockedBytes {
 public:
  // Copies `data` into new locked pages; nullopt (errno set) when they cannot be mapped or locked.
  static std::optional<LockedBytes> copy_of(std::string_view data);
  LockedBytes(LockedBytes&& other) noexcept;
  LockedBytes& operator=(LockedBytes&& other) noexcept;
  LockedBytes(const LockedBytes&) = delete;
  LockedBytes& operator=(const LockedBytes&) = delete;
  ~LockedBytes();

  std::string_view view() const noexcept;
  std::size_t capacity() const noexcept { return mapped_; }
  // Overwrites every mapped byte with zeros (the destructor does it too).
  void wipe() noexcept;
  // The mapped bytes, for a test that checks they were wiped.
  const unsigned char* mapped() const noexcept { return data_; }

 private:
  LockedBytes(unsigned char* data, std::size_t mapped, std::size_t size) noexcept
      : data_(data), mapped_(mapped), size_(size) {}
  void release() noexcept;

  unsigned char* data_ = nullptr;
  std::size_t mapped_ = 0;
  std::size_t size_ = 0;
};

struct KeyPoolOptions {
  keystore::KeyType type = keystore::KeyType::rsa2048;  // PROVISION_KEY_TYPE
  std::size_t target = 2;                               // PROVISION_KEY_POOL; 0: off
  // Each generation on the pool's thread, with its duration (for the metrics).
  std::function<void(keystore::KeyType, std::chrono::duration<double>)> on_generated;
  // Tests: called with every pooled key's locked bytes just after they were wiped.
  std::function<void(const unsigned char* bytes, std::size_t size)> after_wipe;
};

struct KeyPoolState {
  keystore::KeyType type = keystore::KeyType::rsa2048;
  std::size_t target = 0;  // after a failed mlock: what could be locked
  std::size_t held = 0;
  std::uint64_t hits = 0;    // requests of the pool's type answered from it
  std::uint64_t misses = 0;  // requests of the pool's type that found it empty
  std::uint64_t generated = 0;
};

class KeyPool {
 public:
  // Starts the thread (none when options.target is 0).
  explicit KeyPool(KeyPoolOptions options);
  KeyPool(const KeyPool&) = delete;
  KeyPool& operator=(const KeyPool&) = delete;
  // stop(), then wipes every key still held.
  ~KeyPool();

  // A pair of `type` from the pool, its locked copy wiped (and a new one started); nullopt for
  // another type or an empty pool: the caller generates as without a pool. The caller wipes
  // private_pem (a buffer of exactly its size: one copy). Any thread.
  std::optional<keystore::KeyPair> take(keystore::KeyType type);

  // Stops generating: a generation in progress ends at its next draw of random bytes. cancel()
  // returns at once; stop() also waits for the thread. Keys held stay until taken or destroyed.
  // Both idempotent.
  void cancel() noexcept;
  void stop();

  KeyPoolState state() const;
  // The pool thread's id (0 when there is none), to check its scheduling policy.
  pid_t thread_id() const;
  // Tests: waits until the pool holds its target (or `timeout` passes); whether it does.
  bool wait_full(std::chrono::milliseconds timeout) const;

 private:
  struct Pooled {
    LockedBytes private_pem;
    std::string public_pem;
  };
  void run();
  void drop(Pooled& pooled);

  KeyPoolOptions options_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::deque<Pooled> held_;
  std::size_t target_ = 0;
  std::uint64_t hits_ = 0, misses_ = 0, generated_ = 0;
  pid_t thread_id_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace pa
