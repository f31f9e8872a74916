#pragma once
// The intake spool (SPEC section 3.4). libmosquitto 2.0 acknowledges a QoS 1 message before its
// callback runs, so the callback appends the message here and fsyncs it before it returns: from
// then on a crash, an OOM or watchdog kill, a power cut or a drain that ran out cannot lose it.
// A request stays pending until every message answering it was acknowledged by the broker; after a
// restart the agent serves the pending ones again, in arrival order, before newer ones.
//
// The file (intake.spool in the state folder, 0600) is a sequence of frames
//   u32 body length | u32 CRC-32C of the body | body
// with little-endian integers. Bodies start with one type byte:
//   'S' epoch u64, next sequence number u64          (first frame of every file; the requests
//                                                    below it may be older, never newer)
//   'R' seq u64, arrived ms i64, expires ms i64, kind u8, topic, device, payload,
//       has response topic u8, response topic, correlation data       (a request arrived)
//   'B' seq u64, had key u8, fingerprint                (a key change is about to start)
//   'D' seq u64                                         (the request is answered)
// Strings are u32 length + bytes. A torn or corrupt tail (a crash mid-append) is cut off when
// the file is read back. The epoch (random, made with the file) tells sequence numbers of this
// spool from those of an earlier one that was removed by hand.
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "intake/request.hpp"
#include "keystore/file_util.hpp"

namespace pa {

// Sequence numbers stay below this, and the next one a file names is at most this: the last
// request number handed out must still have a successor a header can hold. A spool that reaches it
// (after 2^64 requests; in practice only a forged file) refuses new requests as `failed`.
constexpr std::uint64_t kSpoolSeqLimit = ~std::uint64_t{0} - 1;

// Where a request sits in the intake order: comparable only within one epoch.
struct SpoolPosition {
  std::uint64_t epoch = 0;
  std::uint64_t seq = 0;
};

// A key change begun for a request ('B'): the fingerprint the device's key had before it, or
// none when it had no key.
struct ChangeIntent {
  std::optional<std::string> fingerprint_before;
};

struct SpooledRequest {
  InboundMessage message;              // message.seq is its sequence number
  std::optional<ChangeIntent> intent;  // set when a key change had begun before the crash
};

// What a spool file holds, read back (pure: no I/O, for tests and fuzzing).
struct SpoolImage {
  std::uint64_t epoch = 0;  // 0: no header (empty or unreadable file)
  std::uint64_t next_seq = 1;
  std::vector<SpooledRequest> pending;  // requests without a 'D', in arrival order
  std::size_t valid_bytes = 0;          // the prefix made of whole, intact frames
  std::size_t frames = 0;
};
SpoolImage read_spool_image(std::string_view bytes);

// The encoded frames, for tests that build or damage spool files.
std::string encode_spool_header(std::uint64_t epoch, std::uint64_t next_seq);
std::string encode_spool_request(const InboundMessage& message, std::int64_t arrived_ms);
std::string encode_spool_intent(std::uint64_t seq, const ChangeIntent& intent);
std::string encode_spool_done(std::uint64_t seq);

class IntakeSpool {
 public:
  // Opens <state_dir>/intake.spool (creating it 0600), reads back what an earlier run left and
  // cuts off a torn tail. `capacity` bounds the pending requests (PROVISION_QUEUE_MAX). Throws
  // std::system_error when the file cannot be opened, read or repaired.
  IntakeSpool(const std::filesystem::path& state_dir, std::size_t capacity);

  // For bench/ only (the undocumented PA_BENCH_UNSPOOLED=1): count requests but write nothing,
  // to measure what durability costs. Never for a real agent.
  void disable_writes_for_bench() { unspooled_ = true; }
  IntakeSpool(const IntakeSpool&) = delete;
  IntakeSpool& operator=(const IntakeSpool&) = delete;

  // The requests an earlier run left unanswered, in arrival order (once; later calls get none).
  std::vector<SpooledRequest> take_recovered();

  enum class Admission { spooled, full, failed };
  // Network thread: gives `message` the next sequence number, appends it and fsyncs. `full`:
  // `capacity` requests are pending (nothing written); `failed`: the write or fsync failed, or the
  // sequence numbers are used up (`error` says why; nothing counts as spooled).
  Admission append(InboundMessage& message, std::string* error);

  // Records, fsynced, that a key change for `seq` is about to start. false when it could not be
  // written (the caller must then not change the key).
  bool begin_change(std::uint64_t seq, const ChangeIntent& intent);

  // The request is answered (every message answering it acknowledged). Not fsynced: losing it in
  // a crash only means serving the request again, which the ledger and the intents make harmless.
  void finish(std::uint64_t seq);

  std::uint64_t epoch() const { return epoch_; }
  // The highest sequence number handed out so far.
  std::uint64_t last_seq() const;
  std::size_t pending() const;
  std::uint64_t file_size() const;

 private:
  // Where each pending request's frames ('R', then its 'B' if any) are in the file, so that a
  // compaction can copy them without keeping payloads in memory.
  struct Extent {
    std::uint64_t offset = 0;
    std::uint32_t length = 0;
  };
  Extent write_locked(std::string_view frame, bool sync);
  void compact_locked();

  std::filesystem::path dir_;
  std::filesystem::path path_;
  std::size_t capacity_;
  mutable std::mutex mutex_;
  keystore::UniqueFd fd_;
  std::uint64_t epoch_ = 0;
  std::uint64_t next_seq_ = 1;
  std::uint64_t size_ = 0;
  std::unordered_map<std::uint64_t, std::vector<Extent>> pending_extents_;
  std::vector<SpooledRequest> recovered_;
  bool unspooled_ = false;
};

}  // namespace pa
