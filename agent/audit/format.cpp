#include "audit/format.hpp"

#include <cryptopp/filters.h>
#include <cryptopp/hex.h>
#include <cryptopp/sha.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "base/json_writer.hpp"
#include "base/text.hpp"

namespace pa::audit {
namespace {

constexpr std::string_view kHashMember = ",\"hash\":\"";
constexpr std::size_t kHashDigits = 64;
constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026

// Valid UTF-8 of at most kMaxFieldBytes: a longer text is cut before a character that would
// cross the limit (with room for the ellipsis) and marked.
std::string bounded(std::string_view text) {
  std::string valid = valid_utf8(text);
  if (valid.size() <= kMaxFieldBytes) return valid;
  std::size_t end = kMaxFieldBytes - kEllipsis.size();
  // Back up to the start of a character (continuation bytes are 10xxxxxx).
  while (end > 0 && (static_cast<unsigned char>(valid[end]) & 0xC0) == 0x80) --end;
  valid.resize(end);
  valid += kEllipsis;
  return valid;
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void put(Writer& writer, const char* name, std::string_view value) {
  writer.Key(name);
  const std::string text = bounded(value);
  writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
}

void put(Writer& writer, const char* name, const std::optional<std::string>& value) {
  if (value) return put(writer, name, std::string_view(*value));
  writer.Key(name);
  writer.Null();
}

bool is_lower_hex(std::string_view text) {
  for (const char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

std::string generation_file(int generation) {
  if (generation == 0) return kAuditFile;
  return std::string(kAuditFile) + "." + std::to_string(generation);
}

std::string sha256_hex(std::string_view bytes) {
  std::string hex;
  CryptoPP::SHA256 sha;
  CryptoPP::StringSource(reinterpret_cast<const CryptoPP::byte*>(bytes.data()), bytes.size(), true,
                         new CryptoPP::HashFilter(
                             sha, new CryptoPP::HexEncoder(new CryptoPP::StringSink(hex), false)));
  return hex;
}

std::string entry_line(const Entry& entry, std::string* hash) {
  rapidjson::StringBuffer buffer;
  Writer writer(buffer);
  writer.StartObject();
  writer.Key("seq");
  writer.Uint64(entry.seq);
  put(writer, "ts", std::string_view(entry.ts));
  put(writer, "action", std::string_view(entry.action));
  put(writer, "device_id", entry.device_id);
  put(writer, "user_id", entry.user_id);
  put(writer, "request_id", entry.request_id);
  put(writer, "fingerprint", entry.fingerprint);
  put(writer, "previous_fingerprint", entry.previous_fingerprint);
  put(writer, "outcome", std::string_view(entry.ok ? "ok" : "error"));
  if (entry.cut_bytes) {
    writer.Key("cut_bytes");
    writer.Uint64(*entry.cut_bytes);
  }
  if (entry.cut_seq) {
    writer.Key("cut_seq");
    writer.Uint64(*entry.cut_seq);
  }
  put(writer, "prev", std::string_view(entry.prev));
  writer.EndObject();
  std::string body(buffer.GetString(), buffer.GetSize());  // T: ends in "}"
  const std::string digest = sha256_hex(body);
  if (hash) *hash = digest;
  body.pop_back();
  body.append(kHashMember).append(digest).append("\"}\n");
  return body;
}

std::optional<HashedLine> split_hashed_line(std::string_view line) {
  const std::size_t tail = kHashMember.size() + kHashDigits + 2;  // ,"hash":"<hex>"}
  if (line.size() < tail + 1 || line.substr(line.size() - 2) != "\"}") return std::nullopt;
  const std::size_t at = line.size() - tail;
  if (line.substr(at, kHashMember.size()) != kHashMember) return std::nullopt;
  const std::string_view digest = line.substr(at + kHashMember.size(), kHashDigits);
  if (!is_lower_hex(digest)) return std::nullopt;
  HashedLine out;
  out.body.reserve(at + 1);
  out.body.append(line.substr(0, at)).push_back('}');
  out.stated_hash = std::string(digest);
  return out;
}

std::string checkpoint_payload(const Head& head) {
  JsonObjectWriter json;
  json.field("seq", static_cast<std::int64_t>(head.seq)).field("hash", head.hash);
  return json.str();
}

std::string checkpoint_message(const Head& head, std::string_view signature) {
  JsonObjectWriter json;
  json.field("seq", static_cast<std::int64_t>(head.seq))
      .field("hash", head.hash)
      .field("signature", signature);
  return json.str();
}

}  // namespace pa::audit
