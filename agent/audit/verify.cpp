#include "audit/verify.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>

#include <algorithm>

#include "audit/jws.hpp"
#include "base/strict_json.hpp"

namespace pa::audit {
namespace {

// One line of the files given, in order.
struct Line {
  std::size_t file = 0;
  std::size_t number = 0;  // 1-based within its file
  std::string_view text;   // without "\n"
  bool complete = true;    // ended in "\n"
};

std::vector<Line> split_lines(const std::vector<std::string_view>& files) {
  std::vector<Line> lines;
  for (std::size_t file = 0; file < files.size(); ++file) {
    std::string_view rest = files[file];
    std::size_t number = 0;
    while (!rest.empty()) {
      const std::size_t newline = rest.find('\n');
      const bool complete = newline != std::string_view::npos;
      const std::size_t length = complete ? newline : rest.size();
      lines.push_back(Line{file, ++number, rest.substr(0, length), complete});
      rest.remove_prefix(complete ? length + 1 : length);
    }
  }
  return lines;
}

bool is_hash(const rapidjson::Value& value) {
  if (!value.IsString() || value.GetStringLength() != kFirstPrev.size()) return false;
  const std::string_view text(value.GetString(), value.GetStringLength());
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// What the verifier reads of an entry whose hash matched.
struct Parsed {
  std::uint64_t seq = 0;
  std::string prev;
  std::string action;
  std::optional<std::uint64_t> cut_bytes;
};

// The members of format.hpp with their types; nullopt with the reason otherwise.
std::optional<Parsed> parse_entry(std::string_view body, std::string& why) {
  rapidjson::Document doc;
  const JsonCheck check = parse_json_strictly(body, doc);
  if (check.fault != JsonFault::none) {
    why = "it is not JSON (" + check.message + ")";
    return std::nullopt;
  }
  if (!doc.IsObject()) {
    why = "it is not a JSON object";
    return std::nullopt;
  }
  auto member = [&](const char* name) -> const rapidjson::Value* {
    const auto it = doc.FindMember(name);
    return it == doc.MemberEnd() ? nullptr : &it->value;
  };
  const rapidjson::Value* seq = member("seq");
  if (!seq || !seq->IsUint64() || seq->GetUint64() == 0) {
    why = "its seq is not a positive integer";
    return std::nullopt;
  }
  for (const char* name : {"ts", "action", "outcome"}) {
    const rapidjson::Value* value = member(name);
    if (!value || !value->IsString()) {
      why = fmt::format("its {} is not a string", name);
      return std::nullopt;
    }
  }
  for (const char* name :
       {"device_id", "user_id", "request_id", "fingerprint", "previous_fingerprint"}) {
    const rapidjson::Value* value = member(name);
    if (!value || !(value->IsString() || value->IsNull())) {
      why = fmt::format("its {} is not a string or null", name);
      return std::nullopt;
    }
  }
  const rapidjson::Value* prev = member("prev");
  if (!prev || !is_hash(*prev)) {
    why = "its prev is not 64 lowercase hex digits";
    return std::nullopt;
  }
  Parsed parsed;
  parsed.seq = seq->GetUint64();
  parsed.prev.assign(prev->GetString(), prev->GetStringLength());
  parsed.action = member("action")->GetString();
  if (parsed.action == "seal") {
    const rapidjson::Value* cut = member("cut_bytes");
    if (!cut || !cut->IsUint64()) {
      why = "it is a seal without cut_bytes";
      return std::nullopt;
    }
    parsed.cut_bytes = cut->GetUint64();
  }
  return parsed;
}

// The seq a line claims, for telling a removed entry from a moved one; nullopt when unreadable.
std::optional<std::uint64_t> claimed_seq(std::string_view text) {
  const auto hashed = split_hashed_line(text);
  if (!hashed) return std::nullopt;
  std::string why;
  const auto parsed = parse_entry(hashed->body, why);
  if (!parsed) return std::nullopt;
  return parsed->seq;
}

}  // namespace

const char* to_string(Problem problem) noexcept {
  switch (problem) {
    case Problem::none:
      return "intact";
    case Problem::changed:
      return "changed";
    case Problem::removed:
      return "removed";
    case Problem::reordered:
      return "reordered";
    case Problem::truncated:
      return "truncated";
    case Problem::torn:
      return "torn";
  }
  return "unknown";
}

Report verify_audit(const std::vector<std::string_view>& files, const VerifyOptions& options) {
  Report report;
  const std::vector<Line> lines = split_lines(files);
  std::optional<std::uint64_t> expected;  // the seq the next entry must have
  const std::optional<Head>& checkpoint = options.checkpoint;

  auto fail = [&](Problem problem, std::uint64_t seq, const Line* at, std::string detail) {
    report.problem = problem;
    report.seq = seq;
    if (at) {
      report.file = at->file;
      report.line = at->number;
    } else {
      report.file = files.empty() ? 0 : files.size() - 1;
    }
    report.detail = std::move(detail);
    return report;
  };

  for (std::size_t index = 0; index < lines.size(); ++index) {
    const Line& line = lines[index];
    // The entry that belongs here: the one after the last, or 1 when the log must begin there.
    const std::uint64_t here =
        expected ? *expected : (options.may_begin_later ? claimed_seq(line.text).value_or(0) : 1);
    if (!line.complete) {
      if (line.file + 1 == files.size())
        return fail(Problem::torn, here, &line,
                    fmt::format("the last line is incomplete ({} bytes without a line end): an "
                                "append cut short by a crash and not yet sealed (the agent seals "
                                "it when it starts), or the file was cut",
                                line.text.size()));
      return fail(Problem::changed, here, &line,
                  "a rotated file ends in an incomplete line: it was cut or damaged");
    }
    const auto hashed = split_hashed_line(line.text);
    if (!hashed)
      return fail(Problem::changed, here, &line,
                  "the line is not an entry: it does not end in its \"hash\" member");
    if (sha256_hex(hashed->body) != hashed->stated_hash)
      return fail(Problem::changed, here, &line, "its bytes do not match its hash");
    std::string why;
    const auto entry = parse_entry(hashed->body, why);
    if (!entry)
      return fail(Problem::changed, here, &line,
                  "its hash matches but " + why + " (rewritten with a recomputed hash)");

    if (!expected) {
      if (!options.may_begin_later && entry->seq != 1)
        return fail(Problem::removed, 1, &line,
                    fmt::format("the log begins at seq {}, but no generation was rotated away: "
                                "the entries before it were removed",
                                entry->seq));
      if ((entry->seq == 1) != (entry->prev == kFirstPrev))
        return fail(Problem::changed, entry->seq, &line,
                    entry->seq == 1 ? "the first entry's prev is not 64 zeros"
                                    : "an entry after the first has the first entry's prev");
      report.first_seq = entry->seq;
    } else if (entry->seq != *expected) {
      if (entry->seq < *expected)
        return fail(Problem::reordered, *expected, &line,
                    fmt::format("seq {} comes again where seq {} belongs", entry->seq, *expected));
      const bool later =
          std::any_of(lines.begin() + static_cast<std::ptrdiff_t>(index) + 1, lines.end(),
                      [&](const Line& other) { return claimed_seq(other.text) == expected; });
      if (later)
        return fail(
            Problem::reordered, *expected, &line,
            fmt::format("seq {} comes later; seq {} stands in its place", *expected, entry->seq));
      return fail(
          Problem::removed, *expected, &line,
          entry->seq == *expected + 1
              ? fmt::format("it is missing: seq {} follows seq {}", entry->seq, report.last.seq)
              : fmt::format("seq {} to {} are missing: seq {} follows seq {}", *expected,
                            entry->seq - 1, entry->seq, report.last.seq));
    } else if (entry->prev != report.last.hash) {
      return fail(Problem::changed, entry->seq, &line,
                  fmt::format("its prev is not the hash of seq {}: one of them was rewritten "
                              "with a recomputed hash",
                              report.last.seq));
    }
    if (checkpoint && entry->seq == checkpoint->seq) {
      if (hashed->stated_hash != checkpoint->hash)
        return fail(Problem::changed, entry->seq, &line,
                    "its hash is not the checkpoint's: it or an entry before it was rewritten "
                    "with recomputed hashes");
      report.checkpoint_checked = true;
    }
    if (entry->cut_bytes)
      report.seals.push_back(SealedTear{entry->seq, *entry->cut_bytes, line.file, line.number});
    ++report.entries;
    report.last = Head{entry->seq, hashed->stated_hash};
    expected = entry->seq + 1;
  }

  if (checkpoint && !report.checkpoint_checked) {
    if (checkpoint->seq > report.last.seq)
      return fail(Problem::truncated, report.last.seq + 1, nullptr,
                  report.entries == 0
                      ? fmt::format("the log holds no entries, but the checkpoint names seq {}",
                                    checkpoint->seq)
                      : fmt::format("the log ends at seq {}, but the checkpoint names seq {}",
                                    report.last.seq, checkpoint->seq));
    report.checkpoint_note = fmt::format(
        "the checkpoint names seq {}, older than the oldest entry kept (seq {}): not checked",
        checkpoint->seq, report.first_seq);
  }
  return report;
}

std::optional<Checkpoint> parse_checkpoint(std::string_view json, std::string* why) {
  auto fail = [&](const char* reason) -> std::optional<Checkpoint> {
    if (why) *why = reason;
    return std::nullopt;
  };
  rapidjson::Document doc;
  if (parse_json_strictly(json, doc).fault != JsonFault::none || !doc.IsObject())
    return fail("not a JSON object");
  const auto seq = doc.FindMember("seq");
  const auto hash = doc.FindMember("hash");
  const auto signature = doc.FindMember("signature");
  if (seq == doc.MemberEnd() || !seq->value.IsUint64() || seq->value.GetUint64() == 0)
    return fail("its seq is not a positive integer");
  if (hash == doc.MemberEnd() || !is_hash(hash->value))
    return fail("its hash is not 64 lowercase hex digits");
  if (signature == doc.MemberEnd() || !signature->value.IsString())
    return fail("its signature is not a string");
  Checkpoint checkpoint;
  checkpoint.head.seq = seq->value.GetUint64();
  checkpoint.head.hash.assign(hash->value.GetString(), hash->value.GetStringLength());
  checkpoint.signature.assign(signature->value.GetString(), signature->value.GetStringLength());
  return checkpoint;
}

bool verify_checkpoint_signature(const Checkpoint& checkpoint, std::string_view public_pem,
                                 std::string* why) {
  const auto payload = jws_rs256_verify(checkpoint.signature, public_pem, why);
  if (!payload) return false;
  rapidjson::Document doc;
  if (parse_json_strictly(*payload, doc).fault != JsonFault::none || !doc.IsObject()) {
    if (why) *why = "the signed payload is not a JSON object";
    return false;
  }
  const auto seq = doc.FindMember("seq");
  const auto hash = doc.FindMember("hash");
  if (seq == doc.MemberEnd() || !seq->value.IsUint64() ||
      seq->value.GetUint64() != checkpoint.head.seq || hash == doc.MemberEnd() ||
      !hash->value.IsString() ||
      std::string_view(hash->value.GetString(), hash->value.GetStringLength()) !=
          checkpoint.head.hash) {
    if (why) *why = "the signature is over another seq or hash than the checkpoint's";
    return false;
  }
  return true;
}

}  // namespace pa::audit
