#pragma once
// The request ledger (SPEC sections 3.1 and 3.4): what was done, so that nothing is done twice.
// - A request id (request_id, else nonce; per device) is recorded with the request's content and
//   its response when the request completes, not when it arrives. The same id with the same
//   content is a retry: it gets the recorded response again (or nothing, when it arrived while
//   the first was still queued or running); with other content it is a replay.
// - Without an id, a ts/timestamp not newer than the last one completed for the device is a
//   replay, and so is an update or delete with the exact content of one completed in the last
//   30 s (a duplicate delivery).
// - A ts outside PROVISION_MAX_SKEW of the agent's clock is a replay.
// Records carry the intake position of the request that made them, so a request served again
// after a crash (the same spool entry) is recognised as itself rather than as its own replay.
//
// Persistence: state folder/ledger.journal, one JSON line per completion, fdatasynced, folded
// into ledger.json now and then; a torn last line is ignored. Everything is bounded.
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "intake/request.hpp"
#include "intake/spool.hpp"
#include "keystore/file_util.hpp"

namespace pa {

struct LedgerLimits {
  std::size_t max_records = 10000;              // completed requests with an id
  std::int64_t record_seconds = 7 * 24 * 3600;  // how long a retry is recognised
  std::size_t max_devices = 10000;              // devices whose last ts is remembered
  std::size_t max_digests = 10000;              // recent id-less update/delete contents
  std::int64_t duplicate_seconds = 30;
  std::size_t journal_max = 1000;  // journal lines before they are folded into ledger.json
};

struct LedgerVerdict {
  enum class Kind {
    fresh,         // run it
    same_message,  // this very request completed before a restart: answer as recorded
    duplicate,     // a retry of a completed request: answer as recorded, with duplicate: true
    in_flight,     // a retry that arrived while the first was queued or running: no answer
    replay,        // refuse
  };
  Kind kind = Kind::fresh;
  std::string reason;          // replay: the reason published on replay_blocked
  std::string message;         // replay: the response's error message
  std::string response;        // same_message, duplicate, in_flight: the recorded response
  bool published_key = false;  // same_message, duplicate: the request published a key
};

class RequestLedger {
 public:
  // `state_dir` empty: memory only. Otherwise loads ledger.json and ledger.journal (creating the
  // folder 0700 when missing). Throws std::system_error when the folder cannot be made.
  RequestLedger(std::filesystem::path state_dir, std::int64_t max_skew_seconds,
                LedgerLimits limits = {});
  RequestLedger(const RequestLedger&) = delete;
  RequestLedger& operator=(const RequestLedger&) = delete;

  // What to do with a decoded request at intake position `at`. `destructive`: the action changes
  // or removes keys (the 30 s duplicate rule applies). `now_us`: Unix microseconds. Thread-safe.
  LedgerVerdict check(const Request& request, const SpoolPosition& at, bool destructive,
                      std::int64_t now_us);

  // Records a request that completed successfully. `watermark`: the newest intake position handed
  // out when it completed (retries up to it arrived while it was in flight). Thread-safe.
  void record(const Request& request, const SpoolPosition& at, std::uint64_t watermark,
              std::string_view response, bool published_key, bool destructive, std::int64_t now_us);

  std::size_t remembered_ids() const;

 private:
  struct IdRecord {
    std::string digest;
    std::string response;
    bool published_key = false;
    SpoolPosition at;
    std::uint64_t watermark = 0;
    std::int64_t time = 0;  // Unix seconds when recorded
  };
  struct Stamp {
    std::int64_t value = 0;  // ts in microseconds, or the time recorded (digests)
    SpoolPosition at;
  };
  struct Entry;  // one completion, as journalled

  void apply(const Entry& entry);
  void prune(std::int64_t now);
  void persist(const Entry& entry);
  void load();
  std::string snapshot() const;

  std::filesystem::path state_dir_;
  std::int64_t max_skew_;
  LedgerLimits limits_;

  mutable std::mutex mutex_;
  std::unordered_map<std::string, IdRecord> ids_;  // device '\n' id -> record
  std::deque<std::pair<std::int64_t, std::string>> id_order_;
  std::unordered_map<std::string, Stamp> last_ts_;  // device -> newest completed ts
  std::unordered_map<std::string, Stamp> digests_;  // content digest -> completed at
  std::deque<std::pair<std::int64_t, std::string>> digest_order_;
  keystore::UniqueFd journal_;
  std::size_t journal_lines_ = 0;
  bool write_failed_ = false;  // logged once
};

}  // namespace pa
