// The replay memory of SPEC section 3.1 as the agent reads it back at start-up: ReplayGuard's
// constructor loads <state>/replay.json and <state>/replay.journal, whatever a crash or a hand
// edit left in them.
//
// Input, in sections:
//   <replay.json text>
//   --- replay.journal ---
//   <replay.journal text>
//   --- requests ---
//   <one request payload per line, for provision/pH01/request>
// Each request that decodes (an empty line is "{}") is admitted in turn, one second apart. A
// request accepted with an id, a ts or (update/delete) content is refused when it comes again at
// once, and again after a restart that reloads what the guard wrote; the memory stays within its
// bounds. Keep inputs under 8 KiB.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "log.hpp"
#include "replay.hpp"
#include "request.hpp"

namespace {

using namespace pa;

constexpr std::string_view kJournalMarker = "--- replay.journal ---\n";
constexpr std::string_view kRequestsMarker = "--- requests ---\n";
constexpr std::int64_t kMaxSkew = 300;
constexpr std::int64_t kNow = 1763892000;  // 2025-11-23T10:00:00Z

// A short journal, so folding it into replay.json happens. The other bounds stay above what an
// input of -max_len bytes can fill: a request accepted just now must still be remembered, and
// evicting the oldest entries when a bound is reached would rightly forget it.
ReplayLimits limits() {
  ReplayLimits limits;
  limits.max_ids = 4096;
  limits.max_devices = 4096;
  limits.max_digests = 4096;
  limits.journal_max = 3;
  return limits;
}

struct Sections {
  std::string_view snapshot, journal, requests;
};

Sections split(std::string_view input) {
  Sections sections;
  auto cut = [&](std::string_view marker) {
    const std::size_t at = input.find(marker);
    if (at == std::string_view::npos) return std::string_view();
    const std::string_view after = input.substr(at + marker.size());
    input = input.substr(0, at);
    return after;
  };
  sections.requests = cut(kRequestsMarker);
  sections.journal = cut(kJournalMarker);
  sections.snapshot = input;
  return sections;
}

std::vector<Request> decode_requests(std::string_view lines) {
  std::vector<Request> requests;
  const Decryptor no_envelopes = [](const Envelope&, const std::string&) {
    return std::variant<std::string, RequestError>(RequestError{ErrorCode::decrypt_failed, "-"});
  };
  while (!lines.empty()) {
    const std::size_t end = lines.find('\n');
    InboundMessage message;
    message.topic = "provision/pH01/request";
    message.device_id = "pH01";
    message.payload = std::string(lines.substr(0, end));
    lines = end == std::string_view::npos ? std::string_view() : lines.substr(end + 1);
    Decoded decoded = decode_request(message, 65536, no_envelopes);
    if (decoded.request) requests.push_back(std::move(*decoded.request));
  }
  return requests;
}

// Whether accepting `request` leaves something that refuses it next time (SPEC 3.1).
bool remembered(const Request& request) {
  const bool has_id = (request.request_id && !request.request_id->empty()) ||
                      (request.nonce && !request.nonce->empty());
  const bool destructive = request.action == kActionUpdate || request.action == kActionDelete;
  return has_id || request.ts || destructive;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log_init(LogLevel::error);  // a warning per unreadable file would flood the output
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fuzz::ScratchDir scratch;
  const std::filesystem::path state = scratch.path() / "state";
  const Sections sections = split(fuzz::as_text(data, size));
  std::filesystem::create_directories(state);
  fuzz::write_file(state / "replay.json", sections.snapshot);
  fuzz::write_file(state / "replay.journal", sections.journal);

  std::int64_t now = kNow;
  std::vector<std::pair<Request, std::int64_t>> accepted;  // and when
  {
    ReplayGuard guard(state, kMaxSkew, limits());
    for (const Request& request : decode_requests(sections.requests)) {
      ++now;
      const auto refusal = guard.admit(request, now);
      PA_FUZZ_CHECK(guard.remembered_ids() <= limits().max_ids,
                    std::to_string(guard.remembered_ids()));
      if (refusal) {
        PA_FUZZ_CHECK(!refusal->reason.empty() && !refusal->message.empty(), request.json);
        continue;
      }
      if (!remembered(request)) continue;
      PA_FUZZ_CHECK(guard.admit(request, now).has_value(), "accepted twice: " + request.json);
      accepted.emplace_back(request, now);
    }
  }
  if (accepted.empty()) return 0;
  // After a restart the last request accepted is still refused at the time it was accepted
  // (later, its ts or content may rightly have left the window).
  const auto& [last, accepted_at] = accepted.back();
  ReplayGuard reloaded(state, kMaxSkew, limits());
  PA_FUZZ_CHECK(reloaded.admit(last, accepted_at).has_value(),
                "accepted again after a restart: " + last.json);
  return 0;
}
