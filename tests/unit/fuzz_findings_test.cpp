// Defects the fuzz targets found (tests/fuzz, scripts/fuzz.sh), each pinned here by the test that
// would have caught it; their reproducers now seed the targets' corpora (tests/fuzz/corpus/).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <variant>

#include "config/config.hpp"
#include "intake/ledger.hpp"
#include "intake/request.hpp"
#include "intake/spool.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

InboundMessage message(std::string payload) {
  InboundMessage m;
  m.topic = "provision/pH01/request";
  m.device_id = "pH01";
  m.payload = std::move(payload);
  return m;
}

Decoded decode(const std::string& payload) {
  const Decryptor refuse = [](const Envelope&, const std::string&) {
    return std::variant<std::string, RequestError>(RequestError{ErrorCode::decrypt_failed, "-"});
  };
  return decode_request(message(payload), 65536, refuse, nullptr);
}

// The earliest and latest second a ts may name: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
constexpr std::int64_t kFirstSecond = -62135596800;
constexpr std::int64_t kLastSecond = 253402300799;

// fuzz_ledger, corpus/ledger/ts-int64-min: {"ts":-9223372036854775808} was accepted, and the
// ledger's window check computed now - ts, a signed overflow.
TEST(RequestTimestamp, TsOutsideYears1To9999IsInvalid) {
  for (const std::string& ts :
       {std::string("-9223372036854775808"), std::string("9223372036854775807"),
        std::to_string(kFirstSecond - 1), std::to_string(kLastSecond + 1)}) {
    const Decoded d = decode(R"({"ts":)" + ts + "}");
    ASSERT_TRUE(d.error) << ts;
    EXPECT_EQ(d.error->code, ErrorCode::invalid_request) << ts;
    EXPECT_NE(d.error->message.find("ts"), std::string::npos) << d.error->message;
  }
  const Decoded first = decode(R"({"ts":)" + std::to_string(kFirstSecond) + "}");
  ASSERT_TRUE(first.request) << first.error->message;
  EXPECT_EQ(first.request->ts_us, kFirstSecond * 1000000);
  const Decoded last = decode(R"({"ts":)" + std::to_string(kLastSecond) + "}");
  ASSERT_TRUE(last.request) << last.error->message;
  EXPECT_EQ(last.request->ts_us, kLastSecond * 1000000);
}

TEST(RequestLedger, FarTimestampsAreOutsideTheWindowByTheirTrueDistance) {
  constexpr std::int64_t kNow = 1795000000;
  RequestLedger ledger({}, 300);
  const Decoded first = decode(R"({"ts":)" + std::to_string(kFirstSecond) + "}");
  ASSERT_TRUE(first.request);
  const LedgerVerdict behind = ledger.check(*first.request, {7, 1}, false, kNow * 1000000);
  EXPECT_EQ(behind.kind, LedgerVerdict::Kind::replay);
  EXPECT_EQ(behind.reason, "timestamp_outside_window");
  EXPECT_NE(behind.message.find(std::to_string(kNow - kFirstSecond) + " s behind"),
            std::string::npos)
      << behind.message;
  const Decoded last = decode(R"({"ts":)" + std::to_string(kLastSecond) + "}");
  ASSERT_TRUE(last.request);
  const LedgerVerdict ahead = ledger.check(*last.request, {7, 2}, false, kNow * 1000000);
  EXPECT_EQ(ahead.reason, "timestamp_outside_window");
  EXPECT_NE(ahead.message.find(std::to_string(kLastSecond - kNow) + " s ahead of"),
            std::string::npos)
      << ahead.message;
}

// The number between "x": and the closing brace of {"x":N}, as a double read correctly rounded.
double number_in(const std::string& json) {
  const std::size_t start = json.find(':') + 1;
  return std::strtod(json.substr(start, json.rfind('}') - start).c_str(), nullptr);
}

// fuzz_request, corpus/request/number-not-fixed-point: RapidJSON's default number parsing is not
// correctly rounded, so a long number reached plugins changed in its last digit, and decoding the
// request's own JSON again gave another request.
TEST(RequestHostile, NumbersReachPluginsAtFullPrecision) {
  const std::string nested = R"({"a":[[[[[[[[33333333333333333333333333333333333333333]]]]]]]]})";
  const Decoded found = decode(nested);
  ASSERT_TRUE(found.request);
  const std::string& json = found.request->json;
  EXPECT_EQ(std::strtod(json.substr(json.rfind('[') + 1).c_str(), nullptr),
            std::strtod("33333333333333333333333333333333333333333", nullptr))
      << json;
  EXPECT_EQ(decode(json).request->json, json);

  for (const char* number :
       {"333333333333333333333333333333333333333333333", "2.2250738585072011e-308",
        "123456789012345678901234567890", "30078505129381147446200",
        "0.500000000000000166533453693773481063544750213623046875"}) {
    const Decoded d = decode(std::string(R"({"x":)") + number + "}");
    ASSERT_TRUE(d.request) << number;
    EXPECT_EQ(number_in(d.request->json), std::strtod(number, nullptr))
        << number << " reached plugins as " << d.request->json;
    const Decoded again = decode(d.request->json);
    ASSERT_TRUE(again.request) << d.request->json;
    EXPECT_EQ(again.request->json, d.request->json);
    EXPECT_EQ(again.request->content_digest, d.request->content_digest);
  }
}

// fuzz_broker_config, corpus/broker_config/scheme-newline: an unsupported scheme was echoed raw,
// so {"broker":"mq\nttp://x"} made the one-line configuration error two lines.
TEST(ConfigBrokerUrl, ControlCharactersInTheSchemeAreEscaped) {
  test::TempDir dir;
  const std::string json = dir.file("broker.json");
  test::write_file(json, R"({"broker":"mq\nttp://x"})");
  ConfigInputs from_json;
  from_json.flags["MQTT_BROKER_CONFIG"] = json;
  ConfigInputs from_flag;
  from_flag.flags["MQTT_BROKER_URL"] = "mq\r\x1btt\tp://x";
  for (const ConfigInputs& inputs : {from_json, from_flag}) {
    try {
      load_config(inputs);
      ADD_FAILURE() << "an unsupported scheme was accepted";
    } catch (const ConfigError& error) {
      const std::string line = error.what();
      EXPECT_EQ(line.find_first_of("\n\r\x1b\t"), std::string::npos) << line;
      EXPECT_NE(line.find("MQTT_BROKER_URL"), std::string::npos) << line;
      EXPECT_NE(line.find("unsupported scheme"), std::string::npos) << line;
    }
  }
}

// fuzz_json and fuzz_request, corpus/json/: RapidJSON 1.1.0's full-precision number parsing
// crashed (tiny-number-overflows-power-index: SIGSEGV from a broker message) and misread numbers
// (0e308 became -6.06e-269) that then reached plugins. The strict parse no longer uses it, and
// plugins get the validated text itself.
TEST(RequestHostile, NumbersThatBrokeFullPrecisionParsingAreHarmless) {
  for (const std::string& number :
       {std::string("1.3090513860566162669e-343"), std::string("0e308"), std::string("0.1e-324"),
        std::string("18446744073709551615629"), std::string("1.7976931348623157e308")}) {
    const std::string payload = R"({"request_id":"n","x":)" + number + "}";
    const Decoded d = decode(payload);
    ASSERT_TRUE(d.request) << number << ": " << d.error->message;
    EXPECT_EQ(d.request->json, payload) << "plugins get the text as sent";
  }
}

// fuzz_json, corpus/json/number-above-double-max: a number past the largest double was read as
// infinity without a parse error and accepted; it is invalid_json now, with the reason.
TEST(RequestHostile, ANumberBeyondTheLargestDoubleIsInvalidJson) {
  const Decoded d = decode(R"({"request_id":"n","x":1.7976931348623159e308})");
  ASSERT_FALSE(d.request);
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->code, ErrorCode::invalid_json);
  EXPECT_NE(d.error->message.find("a number beyond the range of a double"), std::string::npos)
      << d.error->message;
  EXPECT_TRUE(decode(R"({"request_id":"n","x":-1.7976931348623157e308})").request)
      << "the largest double itself is fine";
}

// fuzz_spool, corpus/spool/*-with-trailing-byte and *-seq-max: a frame cut off as damaged still
// counted (a request, an intent, an answered mark, a header), and a sequence number of 2^64-1
// would wrap. A file must read exactly like its intact prefix.
TEST(IntakeSpoolImage, ADamagedFrameChangesNothing) {
  for (const char* name : {"request-frame-with-trailing-byte", "intent-frame-with-trailing-byte",
                           "done-frame-with-trailing-byte", "header-with-trailing-byte",
                           "header-next-seq-max", "request-seq-max"}) {
    SCOPED_TRACE(name);
    const std::string bytes = test::read_file(std::string(PA_FUZZ_CORPUS_DIR) + "/spool/" + name);
    ASSERT_FALSE(bytes.empty());
    const SpoolImage whole = read_spool_image(bytes);
    EXPECT_LT(whole.valid_bytes, bytes.size()) << "the damaged frame must be cut off";
    const SpoolImage prefix =
        read_spool_image(std::string_view(bytes).substr(0, whole.valid_bytes));
    EXPECT_EQ(whole.epoch, prefix.epoch);
    EXPECT_EQ(whole.next_seq, prefix.next_seq);
    ASSERT_EQ(whole.pending.size(), prefix.pending.size());
    for (std::size_t i = 0; i < whole.pending.size(); ++i) {
      EXPECT_EQ(whole.pending[i].message.seq, prefix.pending[i].message.seq);
      EXPECT_EQ(whole.pending[i].intent.has_value(), prefix.pending[i].intent.has_value());
    }
    EXPECT_LE(whole.next_seq, kSpoolSeqLimit);
  }
}

// fuzz_spool, corpus/spool/request-seq-one-below-max (checksums set): a request numbered 2^64-2 was
// accepted, so the next sequence number was 2^64-1, which a header cannot hold: the file the agent
// rewrote at start read back as no spool at all, and every pending request in it was lost.
TEST(IntakeSpoolImage, ARequestWhoseSuccessorAHeaderCannotHoldIsDamage) {
  InboundMessage first = message(R"({"request_id":"first"})");
  first.seq = 1;
  InboundMessage last = message(R"({"request_id":"last"})");
  last.seq = kSpoolSeqLimit;  // 2^64-2
  const std::string intact = encode_spool_header(7, 1) + encode_spool_request(first, 0);
  const std::string bytes = intact + encode_spool_request(last, 0);
  const SpoolImage image = read_spool_image(bytes);
  EXPECT_EQ(image.valid_bytes, intact.size()) << "the request numbered 2^64-2 must be cut off";
  EXPECT_EQ(image.next_seq, 2u);
  ASSERT_EQ(image.pending.size(), 1u);

  // What the agent rewrites from it reads back the same.
  std::string encoded = encode_spool_header(image.epoch, image.next_seq);
  for (const SpooledRequest& request : image.pending)
    encoded += encode_spool_request(request.message, 0);
  const SpoolImage again = read_spool_image(encoded);
  EXPECT_EQ(again.valid_bytes, encoded.size());
  EXPECT_EQ(again.epoch, image.epoch);
  EXPECT_EQ(again.next_seq, image.next_seq);
  EXPECT_EQ(again.pending.size(), image.pending.size());
}

// fuzz_spool, corpus/spool/header-next-seq-at-limit: a header naming next sequence number 2^64-2
// let the agent spool one more request, and the file it then wrote could not be read back (its
// header was cut off as damage: the spool and its pending requests were gone on the next start).
TEST(IntakeSpool, UsedUpSequenceNumbersRefuseTheRequestAndKeepTheFile) {
  test::TempDir state;
  InboundMessage pending = message(R"({"request_id":"kept"})");
  pending.seq = kSpoolSeqLimit - 1;
  test::write_file(state.file("intake.spool"),
                   encode_spool_header(7, kSpoolSeqLimit - 1) + encode_spool_request(pending, 0),
                   0600);
  std::string before;
  {
    IntakeSpool spool(state.path(), 16);
    ASSERT_EQ(spool.take_recovered().size(), 1u);
    EXPECT_EQ(spool.last_seq(), kSpoolSeqLimit - 1);
    before = test::read_file(state.file("intake.spool"));
    InboundMessage arrived = message(R"({"request_id":"new"})");
    std::string error;
    EXPECT_EQ(spool.append(arrived, &error), IntakeSpool::Admission::failed);
    EXPECT_NE(error.find("used up its sequence numbers"), std::string::npos) << error;
    EXPECT_EQ(arrived.seq, 0u);
    EXPECT_EQ(test::read_file(state.file("intake.spool")), before) << "nothing written";
  }
  IntakeSpool reopened(state.path(), 16);
  EXPECT_EQ(reopened.epoch(), 7u);
  const std::vector<SpooledRequest> recovered = reopened.take_recovered();
  ASSERT_EQ(recovered.size(), 1u);
  EXPECT_EQ(recovered[0].message.payload, R"({"request_id":"kept"})");
  EXPECT_EQ(read_spool_image(test::read_file(state.file("intake.spool"))).valid_bytes,
            before.size());
}

// fuzz_ledger, corpus/ledger/future-dated-*: after the clock stepped back, the ledger in memory
// and the ledger read back after a restart evicted different entries (the reload sorted by time).
TEST(RequestLedger, AReloadAnswersAsMemoryDidAfterAClockStep) {
  test::TempDir dir;
  LedgerLimits limits;
  limits.max_records = 4;
  constexpr std::int64_t kNow = 1795000000;
  auto with_id = [](int i) {
    Request r;
    r.device_id = "pH01";
    r.action = kActionGenerate;
    r.request_id = "id-" + std::to_string(i);
    r.content_digest = "c";
    return r;
  };
  // Recorded at a time the clock then stepped back from, then at the corrected time.
  const std::int64_t times[] = {kNow + 1000, kNow, kNow + 1, kNow + 2, kNow + 3, kNow + 4};
  std::vector<LedgerVerdict::Kind> before;
  {
    RequestLedger ledger(dir.path(), 300, limits);
    for (int i = 0; i < 6; ++i)
      ledger.record(with_id(i), {7, std::uint64_t(i + 1)}, i + 1, "{}", false, false,
                    times[i] * 1000000);
    for (int i = 0; i < 6; ++i)
      before.push_back(ledger.check(with_id(i), {7, 100}, false, (kNow + 5) * 1000000).kind);
  }
  RequestLedger reloaded(dir.path(), 300, limits);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(reloaded.check(with_id(i), {7, 100}, false, (kNow + 5) * 1000000).kind, before[i])
        << "id-" << i;
  // The newest is always still known.
  EXPECT_EQ(before[5], LedgerVerdict::Kind::duplicate);
}

}  // namespace
}  // namespace pa
