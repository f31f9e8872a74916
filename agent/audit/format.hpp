#pragma once
// The audit log's format (SPEC section 5), one home for the writer (audit_log.hpp) and the
// verifier (verify.hpp).
//
// Files, in the state folder: audit.log (being written), then audit.log.1 (the one before it) up
// to audit.log.4 (the oldest kept). A file that has reached 1 MiB is renamed to audit.log.1 (the
// others move up one, audit.log.4 is dropped) before the next entry is written; the chain runs on
// across files. audit.log.4 exists once, and only once, a generation may have been dropped, so a
// log without it must begin at seq 1.
//
// Each file is a sequence of entries, one per line, each line one JSON object in UTF-8 followed
// by "\n". The members, in this order, every one always present:
//   "seq"                   integer: 1 for the first entry ever, then +1 per entry, across files
//   "ts"                    string: when it was written, RFC 3339 UTC to the second
//   "action"                string: generate, update, publish, delete, repair, seal, ... (free)
//   "device_id"             string or null
//   "user_id"               string or null
//   "request_id"            string or null: the request that caused it (at most 256 bytes kept:
//                           a longer one is cut at a character boundary and ends in U+2026 "…")
//   "fingerprint"           string or null: the device key's fingerprint after the operation
//   "previous_fingerprint"  string or null: the fingerprint before it (generate over an existing
//                           key, update, delete)
//   "outcome"               "ok" or "error"
//   (seal entries only:)
//   "cut_bytes"             integer: how many bytes of a torn entry were cut off at start-up
//   "cut_seq"               integer: the seq the torn entry would have had (the seal's own)
//   "prev"                  string: "hash" of the entry before, 64 "0"s for the first one ever
//   "hash"                  string: 64 lowercase hex digits (see below)
// An absent value is null, so every line has the same members in the same order. Strings are
// written by RapidJSON: '"', '\' and control characters escaped, nothing else (no "\/", no
// "\u" for non-ASCII), no white space anywhere in the line.
//
// "hash" is the SHA-256, in lowercase hex, of the line's exact bytes with the hash member left
// out: the line is T[0 .. n-2] + ",\"hash\":\"" + H + "\"}" where T (n bytes, ending in "}") is
// the object serialised without "hash", and H = hex(SHA-256(T)). So a verifier takes the line,
// cuts at its last ",\"hash\":\"", appends "}" and hashes that:
//   body = line[:line.rindex(b',"hash":"')] + b'}'; ok = sha256(body).hexdigest() == hash
// and checks that each entry's "prev" is the "hash" of the one before and its "seq" is one more.
//
// A crash during an append can leave a last line without its "\n" (a torn entry). At its next
// start the agent logs a warning, cuts those bytes off and appends a "seal" entry that records
// how many there were, so the chain continues and the tear stays visible.
//
// Checkpoints (published retained on P/agents/<client id>/audit every 100 entries and every
// hour): {"seq":N,"hash":H,"signature":JWS}, where JWS is jws_rs256 (jws.hpp) by the agent key
// over the bytes {"seq":N,"hash":H}. A server that keeps them holds the head of the chain, so
// entries removed from the end, which the chain alone cannot show, are found too.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pa::audit {

inline constexpr const char* kAuditFile = "audit.log";
inline constexpr int kGenerations = 4;                  // audit.log.1 .. audit.log.4
inline constexpr std::size_t kMaxFileBytes = 1u << 20;  // a file is rotated past this
inline constexpr std::uint64_t kCheckpointEvery = 100;  // entries between checkpoints
inline constexpr std::size_t kMaxFieldBytes = 256;      // longer strings are cut
inline constexpr std::string_view kFirstPrev =
    "0000000000000000000000000000000000000000000000000000000000000000";

// "audit.log" for 0, "audit.log.<n>" for a rotated generation.
std::string generation_file(int generation);

// One entry as it is written.
struct Entry {
  std::uint64_t seq = 0;
  std::string ts;
  std::string action;
  std::optional<std::string> device_id;
  std::optional<std::string> user_id;
  std::optional<std::string> request_id;
  std::optional<std::string> fingerprint;
  std::optional<std::string> previous_fingerprint;
  bool ok = true;
  std::optional<std::uint64_t> cut_bytes;  // seal entries
  std::optional<std::uint64_t> cut_seq;    // seal entries
  std::string prev;
};

// The entry's line with its hash and the final "\n"; `hash` (optional) gets the hash. Strings are
// made valid UTF-8 and cut to kMaxFieldBytes first.
std::string entry_line(const Entry& entry, std::string* hash = nullptr);

// Lowercase hex SHA-256.
std::string sha256_hex(std::string_view bytes);

// A line (without its "\n") split into the bytes its hash covers (T above) and the hash it
// states; nullopt when it does not end in ,"hash":"<64 lowercase hex digits>"}.
struct HashedLine {
  std::string body;
  std::string stated_hash;
};
std::optional<HashedLine> split_hashed_line(std::string_view line);

// The chain head a checkpoint names.
struct Head {
  std::uint64_t seq = 0;
  std::string hash{kFirstPrev};
};

// {"seq":N,"hash":H}: what a checkpoint's signature covers.
std::string checkpoint_payload(const Head& head);
// {"seq":N,"hash":H,"signature":JWS}: the retained checkpoint message.
std::string checkpoint_message(const Head& head, std::string_view signature);

}  // namespace pa::audit
