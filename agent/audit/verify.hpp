#pragma once
// Reading and checking the audit log (SPEC sections 5 and 7, `provision-agent audit verify`):
// pure functions over bytes, no file or clock, so any input can be fed to them (a fuzzer too).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "audit/format.hpp"

namespace pa::audit {

// What is wrong with the first entry that is not as written.
enum class Problem {
  none,
  changed,    // its bytes are not what was hashed, it is not an entry, or the chain breaks there
  removed,    // an entry is missing: the next one has a later seq
  reordered,  // an entry is out of place: one with this seq comes later, or it comes again
  truncated,  // entries from this seq on are missing (against a checkpoint)
  torn,       // the last line is incomplete and not sealed (a crash, or truncation mid-line)
};
const char* to_string(Problem problem) noexcept;

// A torn entry the agent cut off and sealed at start-up.
struct SealedTear {
  std::uint64_t seq = 0;  // the seal entry's (the torn entry would have had it)
  std::uint64_t cut_bytes = 0;
  std::size_t file = 0;  // index into the files given
  std::size_t line = 0;
};

struct VerifyOptions {
  // A checkpoint {seq, hash}: the log must hold that seq with that hash.
  std::optional<Head> checkpoint;
  // True when older entries may have been rotated away (the oldest generation file is there), so
  // the log may begin after seq 1; false: it must begin at seq 1 with prev 64 zeros.
  bool may_begin_later = false;
};

struct Report {
  Problem problem = Problem::none;
  std::uint64_t seq = 0;      // the first entry affected (the one expected there)
  std::size_t file = 0;       // where it was found: index into the files given
  std::size_t line = 0;       // 1-based line in that file; 0 when past the end
  std::string detail;         // one sentence
  std::uint64_t entries = 0;  // checked before the problem (or all)
  std::uint64_t first_seq = 0;
  Head last;  // the last good entry (seq 0 when none)
  std::vector<SealedTear> seals;
  bool checkpoint_checked = false;  // the checkpoint's seq was in the log and its hash matched
  std::string checkpoint_note;      // why a checkpoint could not be checked (rotated away)

  bool intact() const noexcept { return problem == Problem::none; }
};

// Checks the audit files' contents, oldest first (audit.log.4 ... audit.log.1, audit.log; the
// ones present): each line's hash over its bytes, seq one more than the last, prev the hash of
// the one before, and the checkpoint. Reports the first problem.
Report verify_audit(const std::vector<std::string_view>& files, const VerifyOptions& options = {});

// A checkpoint message as published: {"seq","hash","signature"}.
struct Checkpoint {
  Head head;
  std::string signature;  // JWS compact
};
// nullopt (with the reason in `why`) when `json` is not such an object.
std::optional<Checkpoint> parse_checkpoint(std::string_view json, std::string* why = nullptr);

// Whether the checkpoint's signature is a JWS RS256 by `public_pem` over {"seq","hash"} with the
// checkpoint's own seq and hash. false with the reason in `why`.
bool verify_checkpoint_signature(const Checkpoint& checkpoint, std::string_view public_pem,
                                 std::string* why = nullptr);

}  // namespace pa::audit
