// The request ledger (SPEC sections 3.1 and 3.4): retries answered from the record, replays
// refused, the time window, per-device timestamps, duplicate update/delete deliveries, a request
// served again after a crash recognised as itself, memory across restarts, and the bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "intake/ledger.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

constexpr std::int64_t kNow = 1795000000;  // 2026-11-18
constexpr std::int64_t kNowUs = kNow * 1000000;
constexpr std::int64_t kSkew = 300;
constexpr std::uint64_t kEpoch = 7;

using Kind = LedgerVerdict::Kind;

Request request(std::string action = kActionGenerate, std::string device = "pH01") {
  Request r;
  r.device_id = std::move(device);
  r.action = std::move(action);
  r.content_digest = "digest-of-" + r.device_id + "-" + r.action;
  return r;
}

Request with_id(const std::string& id, std::string device = "pH01") {
  Request r = request(kActionGenerate, std::move(device));
  r.request_id = id;
  return r;
}

Request with_ts_us(std::int64_t ts_us, std::string device = "pH01") {
  Request r = request(kActionUpdate, std::move(device));
  r.ts_us = ts_us;
  r.ts = ts_us / 1000000;
  return r;
}

SpoolPosition at(std::uint64_t seq, std::uint64_t epoch = kEpoch) {
  return SpoolPosition{epoch, seq};
}

bool destructive(const Request& r) {
  return r.action == kActionUpdate || r.action == kActionDelete;
}

LedgerVerdict check(RequestLedger& ledger, const Request& r, std::uint64_t seq,
                    std::int64_t now_us = kNowUs) {
  return ledger.check(r, at(seq), destructive(r), now_us);
}

void complete(RequestLedger& ledger, const Request& r, std::uint64_t seq,
              std::uint64_t watermark = 0, const std::string& response = R"({"status":"ok"})",
              std::int64_t now_us = kNowUs) {
  ledger.record(r, at(seq), std::max(watermark, seq), response, r.action == kActionGenerate,
                destructive(r), now_us);
}

TEST(RequestLedger, RetryOfACompletedRequestGetsTheRecordedResponse) {
  RequestLedger ledger({}, kSkew);
  const Request first = with_id("r-1");
  EXPECT_EQ(check(ledger, first, 1).kind, Kind::fresh);
  complete(ledger, first, 1, 1, R"({"request_id":"r-1","status":"ok","fingerprint":"SHA256:x"})");
  const LedgerVerdict retry = check(ledger, with_id("r-1"), 5);
  EXPECT_EQ(retry.kind, Kind::duplicate);
  EXPECT_EQ(retry.response, R"({"request_id":"r-1","status":"ok","fingerprint":"SHA256:x"})");
  EXPECT_TRUE(retry.published_key);
  // Ids are per device: the same id for another device is another request.
  EXPECT_EQ(check(ledger, with_id("r-1", "pH02"), 6).kind, Kind::fresh);
  EXPECT_EQ(ledger.remembered_ids(), 1u);
}

TEST(RequestLedger, SameIdWithOtherContentIsAReplay) {
  RequestLedger ledger({}, kSkew);
  complete(ledger, with_id("r-1"), 1);
  Request other = with_id("r-1");
  other.content_digest = "something else";
  const LedgerVerdict verdict = check(ledger, other, 2);
  EXPECT_EQ(verdict.kind, Kind::replay);
  EXPECT_EQ(verdict.reason, "id_reused");
  EXPECT_NE(verdict.message.find("r-1"), std::string::npos) << verdict.message;
  // A nonce is the original agent's request_id and is read the same way.
  Request by_nonce = request();
  by_nonce.nonce = "n-1";
  complete(ledger, by_nonce, 3);
  EXPECT_EQ(check(ledger, by_nonce, 4).kind, Kind::duplicate);
}

TEST(RequestLedger, RetryThatArrivedWhileTheFirstWasInFlightIsAnsweredOnce) {
  RequestLedger ledger({}, kSkew);
  // Request 1 completed when the intake had handed out up to 3: retries 2 and 3 arrived while
  // it was queued or running; 4 came after its answer.
  complete(ledger, with_id("r-1"), 1, 3);
  EXPECT_EQ(check(ledger, with_id("r-1"), 2).kind, Kind::in_flight);
  EXPECT_EQ(check(ledger, with_id("r-1"), 3).kind, Kind::in_flight);
  EXPECT_EQ(check(ledger, with_id("r-1"), 4).kind, Kind::duplicate);
  // Positions of another spool (removed by hand) are not comparable: answered, never dropped.
  EXPECT_EQ(ledger.check(with_id("r-1"), at(2, kEpoch + 1), false, kNowUs).kind, Kind::duplicate);
}

TEST(RequestLedger, TheSameRequestServedAgainAfterACrashIsItself) {
  RequestLedger ledger({}, kSkew);
  complete(ledger, with_id("r-1"), 7, 7, R"({"status":"ok"})");
  EXPECT_EQ(check(ledger, with_id("r-1"), 7).kind, Kind::same_message);
  // Without an id: its ts and its content are its own, not a replay of itself.
  const Request stamped = with_ts_us(kNowUs - 5000000);
  complete(ledger, stamped, 8);
  EXPECT_EQ(check(ledger, stamped, 8).kind, Kind::fresh);
  EXPECT_EQ(check(ledger, stamped, 9).reason, "timestamp_not_newer");
  const Request plain_delete = request(kActionDelete);
  complete(ledger, plain_delete, 10);
  EXPECT_EQ(check(ledger, plain_delete, 10).kind, Kind::fresh);
  EXPECT_EQ(check(ledger, plain_delete, 11).reason, "duplicate_message");
}

TEST(RequestLedger, OnlyCompletionUsesUpAnId) {
  RequestLedger ledger({}, kSkew);
  // Checked, then failed (never recorded): the retry runs again.
  EXPECT_EQ(check(ledger, with_id("r-fail"), 1).kind, Kind::fresh);
  EXPECT_EQ(check(ledger, with_id("r-fail"), 2).kind, Kind::fresh);
  EXPECT_EQ(ledger.remembered_ids(), 0u);
}

TEST(RequestLedger, TimestampOutsideTheWindow) {
  RequestLedger ledger({}, kSkew);
  for (std::int64_t ts : {kNow - kSkew - 1, kNow + kSkew + 1}) {
    Request r = with_id("w-" + std::to_string(ts));
    r.ts = ts;
    const LedgerVerdict verdict = check(ledger, r, 1);
    EXPECT_EQ(verdict.reason, "timestamp_outside_window");
    EXPECT_NE(verdict.message.find("PROVISION_MAX_SKEW"), std::string::npos) << verdict.message;
  }
  Request edge = with_id("edge");
  edge.ts = kNow - kSkew;
  EXPECT_EQ(check(ledger, edge, 2).kind, Kind::fresh);
}

TEST(RequestLedger, TimestampMustGrowPerDeviceAndFractionsCount) {
  RequestLedger ledger({}, kSkew);
  complete(ledger, with_ts_us(kNowUs - 10'000'000 + 500'000), 1);
  // Half a second earlier within the same second: not newer.
  EXPECT_EQ(check(ledger, with_ts_us(kNowUs - 10'000'000), 2).reason, "timestamp_not_newer");
  EXPECT_EQ(check(ledger, with_ts_us(kNowUs - 10'000'000 + 500'000), 3).reason,
            "timestamp_not_newer");
  EXPECT_EQ(check(ledger, with_ts_us(kNowUs - 10'000'000 + 500'001), 4).kind, Kind::fresh);
  EXPECT_EQ(check(ledger, with_ts_us(kNowUs - 20'000'000, "pH02"), 5).kind, Kind::fresh);
}

TEST(RequestLedger, DuplicateUpdateOrDeleteWithin30Seconds) {
  RequestLedger ledger({}, kSkew);
  for (const char* action : {kActionUpdate, kActionDelete}) {
    SCOPED_TRACE(action);
    complete(ledger, request(action), 1, 1, "{}", kNowUs);
    EXPECT_EQ(check(ledger, request(action), 2, kNowUs + 29'000'000).reason, "duplicate_message");
    EXPECT_EQ(check(ledger, request(action, "pH02"), 2, kNowUs + 29'000'000).kind, Kind::fresh);
    EXPECT_EQ(check(ledger, request(action), 2, kNowUs + 31'000'000).kind, Kind::fresh);
  }
  // Generating is idempotent: a repeat is not a replay.
  complete(ledger, request(kActionGenerate), 3);
  EXPECT_EQ(check(ledger, request(kActionGenerate), 4).kind, Kind::fresh);
}

TEST(RequestLedger, MemorySurvivesARestart) {
  test::TempDir dir;
  const std::string state = dir.file("state");
  {
    RequestLedger ledger(state, kSkew);
    complete(ledger, with_id("before-restart"), 1, 1, R"({"kept":true})");
    complete(ledger, with_ts_us(kNowUs - 1'000'000), 2);
    complete(ledger, request(kActionDelete, "pH09"), 3);
  }
  EXPECT_EQ(test::file_mode(state), 0700);
  EXPECT_EQ(test::file_mode(state + "/ledger.journal"), 0600);
  RequestLedger ledger(state, kSkew);
  EXPECT_EQ(ledger.remembered_ids(), 1u);
  const LedgerVerdict retry = check(ledger, with_id("before-restart"), 4, kNowUs + 5'000'000);
  EXPECT_EQ(retry.kind, Kind::duplicate);
  EXPECT_EQ(retry.response, R"({"kept":true})");
  EXPECT_EQ(check(ledger, with_id("before-restart"), 1).kind, Kind::same_message);
  EXPECT_EQ(check(ledger, with_ts_us(kNowUs - 1'000'000), 5).reason, "timestamp_not_newer");
  EXPECT_EQ(check(ledger, request(kActionDelete, "pH09"), 6, kNowUs + 5'000'000).reason,
            "duplicate_message");
}

TEST(RequestLedger, RemovesTheReplayMemoryOfEarlierVersions) {
  test::TempDir dir;
  test::write_file(dir.file("replay.json"), R"({"version":1,"ids":[["r-1",1795000000]]})", 0600);
  test::write_file(dir.file("replay.journal"), "", 0600);
  RequestLedger ledger(dir.path(), kSkew);
  EXPECT_FALSE(test::file_exists(dir.file("replay.json")));
  EXPECT_FALSE(test::file_exists(dir.file("replay.journal")));
}

TEST(RequestLedger, JournalIsFoldedIntoTheSnapshot) {
  test::TempDir dir;
  LedgerLimits limits;
  limits.journal_max = 3;
  {
    RequestLedger ledger(dir.path(), kSkew, limits);
    for (int i = 0; i < 10; ++i) complete(ledger, with_id("id-" + std::to_string(i)), i + 1);
  }
  ASSERT_TRUE(test::file_exists(dir.file("ledger.json")));
  EXPECT_EQ(test::file_mode(dir.file("ledger.json")), 0600);
  const std::string journal = test::read_file(dir.file("ledger.journal"));
  EXPECT_LE(std::count(journal.begin(), journal.end(), '\n'), 3);

  RequestLedger ledger(dir.path(), kSkew, limits);
  EXPECT_EQ(ledger.remembered_ids(), 10u);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(check(ledger, with_id("id-" + std::to_string(i)), 100).kind, Kind::duplicate) << i;
}

TEST(RequestLedger, TornJournalLineIsIgnored) {
  test::TempDir dir;
  {
    RequestLedger ledger(dir.path(), kSkew);
    complete(ledger, with_id("whole"), 1);
  }
  // A crash in the middle of an append.
  const std::string journal = dir.file("ledger.journal");
  test::write_file(journal,
                   test::read_file(journal) + R"({"t":1795000000,"device":"pH01","id":"tor)", 0600);
  {
    RequestLedger ledger(dir.path(), kSkew);
    EXPECT_EQ(check(ledger, with_id("whole"), 2).kind, Kind::duplicate);
    complete(ledger, with_id("after-tear"), 3);
  }
  RequestLedger ledger(dir.path(), kSkew);
  EXPECT_EQ(check(ledger, with_id("after-tear"), 4).kind, Kind::duplicate);
  EXPECT_EQ(ledger.remembered_ids(), 2u);
}

TEST(RequestLedger, MemoryIsBounded) {
  test::TempDir dir;
  LedgerLimits limits;
  limits.max_records = 100;
  limits.journal_max = 40;
  {
    RequestLedger ledger(dir.path(), kSkew, limits);
    for (int i = 0; i < 250; ++i) complete(ledger, with_id("id-" + std::to_string(i)), i + 1);
    EXPECT_LE(ledger.remembered_ids(), 100u);
  }
  RequestLedger ledger(dir.path(), kSkew, limits);
  EXPECT_LE(ledger.remembered_ids(), 100u);
  EXPECT_EQ(check(ledger, with_id("id-249"), 1000).kind, Kind::duplicate);  // the newest stay
  EXPECT_EQ(check(ledger, with_id("id-0"), 1000).kind, Kind::fresh);        // the oldest went
  EXPECT_LT(test::read_file(dir.file("ledger.json")).size(), 100u * 400);
}

TEST(RequestLedger, RecordsExpire) {
  LedgerLimits limits;
  limits.record_seconds = 3600;
  RequestLedger ledger({}, kSkew, limits);
  complete(ledger, with_id("old"), 1);
  EXPECT_EQ(check(ledger, with_id("old"), 2, kNowUs + 3599'000'000).kind, Kind::duplicate);
  EXPECT_EQ(check(ledger, with_id("old"), 3, kNowUs + 3601'000'000).kind, Kind::fresh);
}

TEST(RequestLedger, IsSafeAcrossThreads) {
  test::TempDir dir;
  RequestLedger ledger(dir.path(), kSkew);
  std::atomic<std::uint64_t> seq{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const Request r = with_id("t" + std::to_string(t) + "-" + std::to_string(i));
        const std::uint64_t mine = ++seq;
        if (check(ledger, r, mine).kind == Kind::fresh) complete(ledger, r, mine);
      }
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(ledger.remembered_ids(), 200u);
}

}  // namespace
}  // namespace pa
