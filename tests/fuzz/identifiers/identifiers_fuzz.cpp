// The small parsers every request passes (SPEC section 3.1): is_valid_identifier,
// parse_request_topic, parse_rfc3339 and parse_rfc3339_us (with format_rfc3339).
//
// The whole input is tried as each of them; a line break splits it into a topic base and a topic
// too. Results are checked against the SPEC's definitions and by round trips.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "base/time.hpp"
#include "fuzz_support.hpp"
#include "keystore/file_names.hpp"
#include "keystore/identifier.hpp"
#include "protocol/protocol.hpp"

namespace {

using namespace pa;

// SPEC 3.1 read literally: 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter or digit; and
// SPEC 3.5: never one of the key store's own file names.
bool spec_identifier(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  static constexpr std::string_view kAlnum =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  if (kAlnum.find(id.front()) == std::string_view::npos) return false;
  for (char c : id)
    if (kAlnum.find(c) == std::string_view::npos && c != '.' && c != '_' && c != '-') return false;
  for (const char* file : keystore::kDeviceFiles)
    if (id == file) return false;
  return true;
}

const char* leaf(TopicKind kind) {
  switch (kind) {
    case TopicKind::request:
      return "request";
    case TopicKind::update:
      return "update";
    case TopicKind::remove:
      return "delete";
  }
  return "?";
}

void check_identifier(std::string_view text) {
  const bool valid = keystore::is_valid_identifier(text);
  PA_FUZZ_CHECK(valid == spec_identifier(text), std::string(text));
  if (valid)
    PA_FUZZ_CHECK(text != "." && text != ".." && text.find('/') == std::string_view::npos,
                  std::string(text));
}

void check_topic(std::string_view topic, std::string_view base) {
  const auto parsed = parse_request_topic(topic, base);
  if (!parsed) return;
  // The topic is exactly base/D/leaf.
  const std::string rebuilt = std::string(base) + "/" + parsed->first + "/" + leaf(parsed->second);
  PA_FUZZ_CHECK(rebuilt == topic, rebuilt + " != " + std::string(topic));
  PA_FUZZ_CHECK(parsed->first.find('/') == std::string::npos, parsed->first);
}

// format_rfc3339 writes four-digit years only from 1000 to 9999 (strftime's %Y).
constexpr std::int64_t kYear1000 = -30610224000;
constexpr std::int64_t kYear10000 = 253402300800;

void check_time_round_trip(std::int64_t seconds) {
  if (seconds < kYear1000 || seconds >= kYear10000) return;
  const std::string text = format_rfc3339(seconds);
  PA_FUZZ_CHECK(text.size() == 20, text);
  const auto back = parse_rfc3339(text);
  PA_FUZZ_CHECK(back && *back == seconds, std::to_string(seconds) + " -> " + text);
}

// Both parsers accept the same texts; seconds are the microseconds rounded down, and the
// microseconds fit the years 1 to 9999 (the ledger subtracts them from the clock).
void check_time(std::string_view text) {
  const auto seconds = parse_rfc3339(text);
  const auto micros = parse_rfc3339_us(text);
  PA_FUZZ_CHECK(seconds.has_value() == micros.has_value(), std::string(text));
  if (!seconds) return;
  const std::int64_t floored = *micros / 1000000 - (*micros % 1000000 < 0 ? 1 : 0);
  PA_FUZZ_CHECK(floored == *seconds, std::string(text) + " -> " + std::to_string(*seconds) +
                                         " s, " + std::to_string(*micros) + " us");
  // 0001-01-01T00:00:00Z minus the largest offset, 9999-12-31T23:59:59.999999Z plus it.
  PA_FUZZ_CHECK(*seconds >= -62135596800 - 86400 && *seconds < 253402300800 + 86400,
                std::string(text) + " -> " + std::to_string(*seconds));
  check_time_round_trip(*seconds);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input = fuzz::as_text(data, size);
  check_identifier(input);
  check_topic(input, "provision");
  check_time(input);
  if (const std::size_t newline = input.find('\n'); newline != std::string_view::npos) {
    check_topic(input.substr(newline + 1), input.substr(0, newline));
    check_identifier(input.substr(0, newline));
  }
  if (size >= sizeof(std::int64_t)) {
    std::int64_t seconds = 0;
    std::memcpy(&seconds, data, sizeof seconds);
    check_time_round_trip(
        kYear1000 +
        static_cast<std::int64_t>(static_cast<std::uint64_t>(seconds) % (kYear10000 - kYear1000)));
  }
  return 0;
}
