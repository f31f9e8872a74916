// The request ledger (SPEC sections 3.1 and 3.4) as the agent uses it after a crash: a
// RequestLedger loads <state>/ledger.json and <state>/ledger.journal, whatever a crash or a hand
// edit left in them, then checks and records requests as the workers do.
//
// Input, in sections:
//   <ledger.json text>
//   --- ledger.journal ---
//   <ledger.journal text>
//   --- requests ---
//   <one request per line: [D/LEAF ]PAYLOAD, decoded as a message on provision/D/LEAF, where
//    LEAF is request, update or delete; without that prefix on provision/pH01/request>
// Request n (from 0) arrives at intake position (epoch 7, seq 3n+1) at kNow + n seconds; one
// that the ledger calls fresh completes at once and is recorded, with the next position as its
// watermark (a retry arrived while it ran). Right after that, and again after a restart that
// reloads what the ledger wrote:
// - with an id (request_id, else nonce): its own position is same_message, the position within
//   the watermark in_flight, any later one or one of another epoch duplicate (each with the
//   recorded response), and other content under the same id a replay (id_reused);
// - without one: its own position is fresh, a later one a replay when it had a ts
//   (timestamp_not_newer) or was an update or delete (duplicate_message), fresh otherwise;
// the verdicts after the restart are the ones before it, and the bounds hold throughout.
// Keep inputs under 8 KiB (scripts/fuzz.sh does).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/log.hpp"
#include "fuzz_support.hpp"
#include "intake/ledger.hpp"
#include "intake/request.hpp"

namespace {

using namespace pa;
using Kind = LedgerVerdict::Kind;

constexpr std::string_view kJournalMarker = "--- ledger.journal ---\n";
constexpr std::string_view kRequestsMarker = "--- requests ---\n";
constexpr std::string_view kBase = "provision";
constexpr std::int64_t kMaxSkew = 300;
constexpr std::int64_t kNow = 1795000000;  // 2026-11-18T11:06:40Z
constexpr std::uint64_t kEpoch = 7;
// Positions no request of an input reaches: where a retry "arrives later".
constexpr std::uint64_t kLater = std::uint64_t{1} << 40;

// Small record and digest bounds, so eviction happens; a short journal, so folding it into
// ledger.json happens. Evicting the oldest entries never touches the newest one, so the checks
// right after recording stay exact. The device bound stays above what an input of -max_len bytes
// can name: evicting a device's last ts would rightly forget it.
LedgerLimits limits() {
  LedgerLimits limits;
  limits.max_records = 16;
  limits.max_digests = 16;
  limits.max_devices = 4096;
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

// One line as the message it stands for.
InboundMessage message_of(std::string_view line) {
  InboundMessage message;
  message.topic = std::string(kBase) + "/pH01/request";
  message.device_id = "pH01";
  message.payload = std::string(line);
  const std::size_t space = line.find(' ');
  if (space == std::string_view::npos) return message;
  const std::string topic = std::string(kBase) + "/" + std::string(line.substr(0, space));
  if (const auto parsed = parse_request_topic(topic, kBase)) {
    message.topic = topic;
    message.device_id = parsed->first;
    message.kind = parsed->second;
    message.payload = std::string(line.substr(space + 1));
  }
  return message;
}

std::vector<Request> decode_requests(std::string_view lines) {
  static const Decryptor no_envelopes = [](const Envelope&, const std::string&) {
    return std::variant<std::string, RequestError>(RequestError{ErrorCode::decrypt_failed, "-"});
  };
  std::vector<Request> requests;
  while (!lines.empty()) {
    const std::size_t end = lines.find('\n');
    Decoded decoded =
        decode_request(message_of(lines.substr(0, end)), 65536, no_envelopes, fuzz::action_alias);
    lines = end == std::string_view::npos ? std::string_view() : lines.substr(end + 1);
    if (decoded.request) requests.push_back(std::move(*decoded.request));
  }
  return requests;
}

bool has_id(const Request& request) {
  return (request.request_id && !request.request_id->empty()) ||
         (request.nonce && !request.nonce->empty());
}

bool is_destructive(const Request& request) {
  return request.action == kActionUpdate || request.action == kActionDelete;
}

const char* name_of(Kind kind) {
  switch (kind) {
    case Kind::fresh:
      return "fresh";
    case Kind::same_message:
      return "same_message";
    case Kind::duplicate:
      return "duplicate";
    case Kind::in_flight:
      return "in_flight";
    case Kind::replay:
      return "replay";
  }
  return "?";
}

std::string describe(const LedgerVerdict& verdict) {
  std::string text = name_of(verdict.kind);
  if (!verdict.reason.empty()) text += " (" + verdict.reason + ")";
  if (!verdict.response.empty()) text += " answering " + verdict.response;
  return text;
}

// What every verdict promises, whatever the ledger holds.
void check_shape(const Request& request, const LedgerVerdict& verdict, std::int64_t now) {
  const std::string context = request.json + " -> " + describe(verdict);
  if (!has_id(request))
    PA_FUZZ_CHECK(verdict.kind == Kind::fresh || verdict.kind == Kind::replay, context);
  if (verdict.kind == Kind::replay) {
    PA_FUZZ_CHECK(verdict.reason == "id_reused" || verdict.reason == "timestamp_outside_window" ||
                      verdict.reason == "timestamp_not_newer" ||
                      verdict.reason == "duplicate_message",
                  context);
    PA_FUZZ_CHECK(!verdict.message.empty() && verdict.message.find('\n') == std::string::npos,
                  context);
  }
  if (verdict.kind == Kind::fresh && request.ts)
    PA_FUZZ_CHECK(*request.ts >= now - kMaxSkew && *request.ts <= now + kMaxSkew, context);
}

// A request the ledger recorded, and what it was told.
struct Recorded {
  Request request;
  std::uint64_t n = 0;
  std::string response;
  bool published_key = false;
};

SpoolPosition own_position(std::uint64_t n) {
  return {kEpoch, 3 * n + 1};
}

// The probes of a recorded request: the verdicts it gets at its own position, at the one within
// its watermark, later, in another epoch, and later with other content.
struct Probes {
  LedgerVerdict own, within, later, other_epoch, other_content;
};

Probes probe(RequestLedger& ledger, const Recorded& recorded, std::int64_t now_us) {
  const Request& request = recorded.request;
  const bool destructive = is_destructive(request);
  Request other = request;
  other.content_digest += "-other";
  Probes probes;
  probes.own = ledger.check(request, own_position(recorded.n), destructive, now_us);
  probes.within = ledger.check(request, {kEpoch, 3 * recorded.n + 2}, destructive, now_us);
  probes.later = ledger.check(request, {kEpoch, kLater + recorded.n}, destructive, now_us);
  probes.other_epoch = ledger.check(request, {kEpoch + 1, 1}, destructive, now_us);
  probes.other_content = ledger.check(other, {kEpoch, kLater + recorded.n}, destructive, now_us);
  return probes;
}

void expect(const LedgerVerdict& verdict, Kind kind, const char* reason, const Recorded& recorded,
            const char* probe_name) {
  const std::string context = std::string(probe_name) + " of " + recorded.request.json + " -> " +
                              describe(verdict) + ", expected " + name_of(kind) + " " + reason;
  PA_FUZZ_CHECK(verdict.kind == kind, context);
  if (*reason != '\0') PA_FUZZ_CHECK(verdict.reason == reason, context);
  if (kind == Kind::same_message || kind == Kind::duplicate || kind == Kind::in_flight) {
    PA_FUZZ_CHECK(verdict.response == recorded.response, context);
    PA_FUZZ_CHECK(verdict.published_key == recorded.published_key, context);
  }
}

// What the ledger must answer right after recording (SPEC 3.1, 3.4).
void check_just_recorded(RequestLedger& ledger, const Recorded& recorded, std::int64_t now_us) {
  const Probes probes = probe(ledger, recorded, now_us);
  const Request& request = recorded.request;
  if (has_id(request)) {
    expect(probes.own, Kind::same_message, "", recorded, "own position");
    expect(probes.within, Kind::in_flight, "", recorded, "within the watermark");
    expect(probes.later, Kind::duplicate, "", recorded, "later");
    expect(probes.other_epoch, Kind::duplicate, "", recorded, "other epoch");
    expect(probes.other_content, Kind::replay, "id_reused", recorded, "other content");
    return;
  }
  expect(probes.own, Kind::fresh, "", recorded, "own position");
  if (request.ts_us) {
    expect(probes.later, Kind::replay, "timestamp_not_newer", recorded, "later");
    expect(probes.other_epoch, Kind::replay, "timestamp_not_newer", recorded, "other epoch");
  } else if (is_destructive(request)) {
    expect(probes.later, Kind::replay, "duplicate_message", recorded, "later");
    expect(probes.other_epoch, Kind::replay, "duplicate_message", recorded, "other epoch");
  } else {
    expect(probes.later, Kind::fresh, "", recorded, "later");
  }
}

bool same_verdict(const LedgerVerdict& a, const LedgerVerdict& b) {
  return a.kind == b.kind && a.reason == b.reason && a.response == b.response &&
         a.published_key == b.published_key;
}

void check_bounds(const RequestLedger& ledger) {
  PA_FUZZ_CHECK(ledger.remembered_ids() <= limits().max_records,
                std::to_string(ledger.remembered_ids()) + " ids remembered");
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
  std::filesystem::remove_all(state);
  std::filesystem::create_directories(state);
  fuzz::write_file(state / "ledger.json", sections.snapshot);
  fuzz::write_file(state / "ledger.journal", sections.journal);

  std::int64_t now = kNow;
  std::vector<Recorded> recorded;
  std::vector<Probes> before_restart;
  {
    RequestLedger ledger(state, kMaxSkew, limits());
    check_bounds(ledger);
    std::uint64_t n = 0;
    for (const Request& request : decode_requests(sections.requests)) {
      now = kNow + static_cast<std::int64_t>(n);
      const std::int64_t now_us = now * 1000000;
      const SpoolPosition at = own_position(n);
      const bool destructive = is_destructive(request);
      const LedgerVerdict verdict = ledger.check(request, at, destructive, now_us);
      check_shape(request, verdict, now);
      check_bounds(ledger);
      if (verdict.kind == Kind::fresh) {
        Recorded done{request, n, R"({"status":"ok","n":)" + std::to_string(n) + "}",
                      request.action == kActionGenerate};
        ledger.record(request, at, at.seq + 1, done.response, done.published_key, destructive,
                      now_us);
        check_bounds(ledger);
        check_just_recorded(ledger, done, now_us);
        recorded.push_back(std::move(done));
      }
      ++n;
    }
    for (const Recorded& done : recorded)
      before_restart.push_back(probe(ledger, done, now * 1000000));
  }
  if (recorded.empty()) return 0;

  // A restart reads back what the ledger wrote and answers every probe as before.
  RequestLedger reloaded(state, kMaxSkew, limits());
  check_bounds(reloaded);
  for (std::size_t i = 0; i < recorded.size(); ++i) {
    const Probes after = probe(reloaded, recorded[i], now * 1000000);
    const Probes& before = before_restart[i];
    const std::pair<const LedgerVerdict*, const LedgerVerdict*> pairs[] = {
        {&before.own, &after.own},
        {&before.within, &after.within},
        {&before.later, &after.later},
        {&before.other_epoch, &after.other_epoch},
        {&before.other_content, &after.other_content}};
    for (const auto& [was, is] : pairs)
      PA_FUZZ_CHECK(same_verdict(*was, *is), recorded[i].request.json + ": " + describe(*was) +
                                                 " before the restart, " + describe(*is) +
                                                 " after it");
  }
  check_bounds(reloaded);
  return 0;
}
