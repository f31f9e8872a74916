#pragma once
// The tamper-evident audit log of key operations (SPEC section 5): one hash-chained JSON line per
// operation in <state folder>/audit.log, fdatasync'ed before record() returns, rotated past 1 MiB
// with the chain kept, and checkpoints of its head handed to a sink (the agent signs them and
// publishes them retained). The line format, rotation and checkpoints: format.hpp.
//
// Never fatal: no failure here stops the agent or a request. A file that cannot be opened,
// written or synced is logged at error level and the agent keeps serving; that entry is then
// missing (its operation is still in the journal), and the next record() tries again. At least
// once: an operation redone after a crash (SPEC 3.4) can appear twice, with the same request_id.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "audit/format.hpp"
#include "keystore/file_util.hpp"

namespace pa::audit {

// One key operation, as the host reports it.
struct Record {
  std::string action;  // generate, update, publish, delete, repair, ... (free)
  std::optional<std::string> device_id;
  std::optional<std::string> user_id;
  std::optional<std::string> request_id;
  std::optional<std::string> fingerprint;           // the key after the operation
  std::optional<std::string> previous_fingerprint;  // the key before it
  bool ok = true;
};

struct LogOptions {
  std::size_t max_file_bytes = kMaxFileBytes;
  int generations = kGenerations;  // at least 1
  std::uint64_t checkpoint_every = kCheckpointEvery;
  std::chrono::seconds checkpoint_interval = std::chrono::hours(1);
};

class AuditLog {
 public:
  // Publishes a checkpoint of `head`; false when it could not (tried again later). Called on the
  // thread that recorded the entry (every checkpoint_every entries) or that calls tick().
  using CheckpointSink = std::function<bool(const Head& head)>;

  // Opens <folder>/audit.log, finds the head of the chain (in a rotated file when audit.log is
  // empty or missing) and seals a torn last entry (logged as a warning). Never throws: what fails
  // is logged and tried again by the next record().
  explicit AuditLog(std::filesystem::path folder, LogOptions options = {});
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;
  ~AuditLog();

  // Appends one entry and fdatasyncs it. Thread-safe (workers call it concurrently); entries are
  // numbered in the order their calls get the lock.
  void record(const Record& record) noexcept;

  // The last entry written (seq 0 and 64 zeros before the first).
  Head head() const;

  // Where checkpoints go; set once, before requests are served.
  void set_checkpoint_sink(CheckpointSink sink);

  // Call regularly (the event loop's tick): publishes the head when none was published yet by
  // this process, an hour after the last one, or a minute after one failed. Thread-safe; returns
  // at once while another thread publishes a checkpoint, and otherwise waits at most for one
  // append's fdatasync (when a checkpoint is due).
  void tick(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) noexcept;

 private:
  bool open_locked();
  std::optional<Head> append_locked(Entry entry);
  void rotate_locked();
  // With checkpoint_mutex_ held. repeat: publish even when this seq was published before.
  void publish_checkpoint_locked(const Head& head, std::chrono::steady_clock::time_point now,
                                 bool repeat);

  const std::filesystem::path folder_;
  const LogOptions options_;

  mutable std::mutex mutex_;  // guards the file and the head
  keystore::UniqueFd fd_;
  bool ready_ = false;  // fd_ open and head_ known
  std::uint64_t size_ = 0;
  Head head_;

  std::mutex checkpoint_mutex_;  // guards what follows; one checkpoint published at a time
  CheckpointSink sink_;
  std::uint64_t published_seq_ = 0;
  std::chrono::steady_clock::time_point next_checkpoint_ =
      std::chrono::steady_clock::time_point::min();
};

}  // namespace pa::audit
