#pragma once
// Replay protection (SPEC section 3.1). A request is refused as a replay when its ts/timestamp is
// outside PROVISION_MAX_SKEW of the agent's clock, when its request_id or nonce was already
// accepted (remembered for twice the skew: as long as a copy's ts could still pass), when it has
// no id and its ts is not newer than the device's last, or when it is an update/delete with no id
// and no ts whose exact content was accepted for that device in the last 30 s.
//
// What was accepted survives a restart: each accepted request appends one line to
// <state>/replay.journal (fdatasync), and every `journal_max` lines the whole memory is written
// to <state>/replay.json atomically and the journal emptied. Every collection is bounded.
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "keystore/file_util.hpp"
#include "request.hpp"

namespace pa {

struct ReplayRefusal {
  // "timestamp_outside_window", "duplicate_id", "timestamp_not_newer" or "duplicate_message";
  // published on P/status/D/replay_blocked.
  std::string reason;
  std::string message;  // for the response and the log
};

struct ReplayLimits {
  std::size_t max_ids = 10000;      // accepted ids remembered (the newest)
  std::size_t max_devices = 10000;  // devices whose last ts is remembered
  std::size_t max_digests = 10000;  // recent update/delete contents
  std::int64_t duplicate_seconds = 30;
  std::size_t journal_max = 1000;  // journal lines before they are folded into replay.json
};

class ReplayGuard {
 public:
  // `state_dir` empty: memory only. Otherwise loads what replay.json and replay.journal hold
  // (a torn last journal line is ignored) and creates the folder 0700 when missing.
  ReplayGuard(std::filesystem::path state_dir, std::int64_t max_skew, ReplayLimits limits = {});
  ReplayGuard(const ReplayGuard&) = delete;
  ReplayGuard& operator=(const ReplayGuard&) = delete;

  // Checks a decoded request against what was accepted, and remembers it when it passes.
  // `now` is Unix seconds. Thread-safe.
  std::optional<ReplayRefusal> admit(const Request& request, std::int64_t now);

  std::size_t remembered_ids() const;

 private:
  struct Record {
    std::int64_t time = 0;
    std::vector<std::string> ids;
    std::string device;
    std::optional<std::int64_t> ts;
    std::string digest;
  };

  void apply(const Record& record);
  void prune(std::int64_t now);
  void persist(const Record& record);
  void load();
  std::string snapshot() const;

  std::filesystem::path state_dir_;
  std::int64_t max_skew_;
  ReplayLimits limits_;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::int64_t> ids_;  // id -> accepted at
  std::deque<std::pair<std::int64_t, std::string>> id_order_;
  std::unordered_map<std::string, std::int64_t> last_ts_;  // device -> newest accepted ts
  std::unordered_map<std::string, std::int64_t> digests_;  // content digest -> accepted at
  std::deque<std::pair<std::int64_t, std::string>> digest_order_;
  keystore::UniqueFd journal_;
  std::size_t journal_lines_ = 0;
  bool write_failed_ = false;  // logged once
};

}  // namespace pa
