// Replay protection (SPEC section 3.1): the window, ids, per-device timestamps, duplicate
// update/delete deliveries, memory across restarts, and the bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "replay.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

constexpr std::int64_t kNow = 1795000000;  // 2026-11-18
constexpr std::int64_t kSkew = 300;

Request request(std::string action = kActionGenerate, std::string device = "pH01") {
  Request r;
  r.device_id = std::move(device);
  r.action = std::move(action);
  r.json = R"({"action":")" + r.action + R"("})";
  return r;
}

Request with_id(const std::string& id, std::string device = "pH01") {
  Request r = request(kActionGenerate, std::move(device));
  r.request_id = id;
  return r;
}

Request with_ts(std::int64_t ts, std::string device = "pH01") {
  Request r = request(kActionUpdate, std::move(device));
  r.ts = ts;
  return r;
}

std::string reason(const std::optional<ReplayRefusal>& refusal) {
  return refusal ? refusal->reason : "accepted";
}

TEST(ReplayGuard, TimestampOutsideTheWindow) {
  ReplayGuard guard({}, kSkew);
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - kSkew - 1), kNow)), "timestamp_outside_window");
  EXPECT_EQ(reason(guard.admit(with_ts(kNow + kSkew + 1), kNow)), "timestamp_outside_window");
  auto refusal = guard.admit(with_ts(kNow - 3600), kNow);
  ASSERT_TRUE(refusal);
  EXPECT_NE(refusal->message.find("PROVISION_MAX_SKEW"), std::string::npos) << refusal->message;
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - kSkew), kNow)), "accepted");
  Request stale = with_id("fresh-id");
  stale.ts = kNow - 1000;
  EXPECT_EQ(reason(guard.admit(stale, kNow)), "timestamp_outside_window");
  // A refused request does not use up its id.
  stale.ts = kNow;
  EXPECT_EQ(reason(guard.admit(stale, kNow)), "accepted");
}

TEST(ReplayGuard, RequestIdAndNonceAreSingleUse) {
  ReplayGuard guard({}, kSkew);
  EXPECT_EQ(reason(guard.admit(with_id("r-1"), kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(with_id("r-1"), kNow + 1)), "duplicate_id");
  // Ids are not per device: a copy sent to another device's topic is a replay too.
  EXPECT_EQ(reason(guard.admit(with_id("r-1", "pH02"), kNow + 1)), "duplicate_id");
  Request n = request();
  n.nonce = "n-1";
  EXPECT_EQ(reason(guard.admit(n, kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(n, kNow)), "duplicate_id");
  // A nonce is the original agent's request_id: the same namespace.
  EXPECT_EQ(reason(guard.admit(with_id("n-1"), kNow)), "duplicate_id");
  auto refusal = guard.admit(with_id("r-1"), kNow);
  ASSERT_TRUE(refusal);
  EXPECT_NE(refusal->message.find("r-1"), std::string::npos);
  EXPECT_EQ(guard.remembered_ids(), 2u);
}

TEST(ReplayGuard, IdsAreRememberedForTwiceTheWindow) {
  ReplayGuard guard({}, kSkew);
  EXPECT_EQ(reason(guard.admit(with_id("r-1"), kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(with_id("r-1"), kNow + 2 * kSkew)), "duplicate_id");
  EXPECT_EQ(reason(guard.admit(with_id("r-1"), kNow + 2 * kSkew + 1)), "accepted");
}

TEST(ReplayGuard, TimestampMustGrowPerDeviceWhenThereIsNoId) {
  ReplayGuard guard({}, kSkew);
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - 10), kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - 10), kNow)), "timestamp_not_newer");
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - 11), kNow)), "timestamp_not_newer");
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - 10, "pH02"), kNow)), "accepted");  // own device
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - 9), kNow)), "accepted");
  // With an id the id decides, and its ts still counts as the device's last.
  Request r = with_id("r-ts");
  r.ts = kNow - 5;
  EXPECT_EQ(reason(guard.admit(r, kNow)), "accepted");
  Request again = with_id("r-ts-2");
  again.ts = kNow - 5;
  EXPECT_EQ(reason(guard.admit(again, kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - 5), kNow)), "timestamp_not_newer");
}

TEST(ReplayGuard, DuplicateUpdateOrDeleteWithin30Seconds) {
  ReplayGuard guard({}, kSkew);
  for (const char* action : {kActionUpdate, kActionDelete}) {
    SCOPED_TRACE(action);
    EXPECT_EQ(reason(guard.admit(request(action), kNow)), "accepted");
    EXPECT_EQ(reason(guard.admit(request(action), kNow + 29)), "duplicate_message");
    EXPECT_EQ(reason(guard.admit(request(action, "pH02"), kNow + 29)), "accepted");
    Request other = request(action);
    other.json = R"({"action":")" + std::string(action) + R"(","user_id":"u2"})";
    EXPECT_EQ(reason(guard.admit(other, kNow + 29)), "accepted");
  }
  EXPECT_EQ(reason(guard.admit(request(kActionUpdate), kNow + 31)), "accepted");
  // Other actions are idempotent: a repeat is not a replay.
  EXPECT_EQ(reason(guard.admit(request(kActionGenerate), kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(request(kActionGenerate), kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(request(kActionPublishKey), kNow)), "accepted");
  EXPECT_EQ(reason(guard.admit(request(kActionPublishKey), kNow)), "accepted");
}

TEST(ReplayGuard, MemorySurvivesARestart) {
  test::TempDir dir;
  const std::string state = dir.file("state");
  {
    ReplayGuard guard(state, kSkew);
    EXPECT_EQ(reason(guard.admit(with_id("before-restart"), kNow)), "accepted");
    EXPECT_EQ(reason(guard.admit(with_ts(kNow - 1), kNow)), "accepted");
    EXPECT_EQ(reason(guard.admit(request(kActionDelete, "pH09"), kNow)), "accepted");
  }
  EXPECT_EQ(test::file_mode(state), 0700);
  EXPECT_EQ(test::file_mode(state + "/replay.journal"), 0600);
  ReplayGuard guard(state, kSkew);
  EXPECT_EQ(guard.remembered_ids(), 1u);
  EXPECT_EQ(reason(guard.admit(with_id("before-restart"), kNow + 5)), "duplicate_id");
  EXPECT_EQ(reason(guard.admit(with_ts(kNow - 1), kNow + 5)), "timestamp_not_newer");
  EXPECT_EQ(reason(guard.admit(request(kActionDelete, "pH09"), kNow + 5)), "duplicate_message");
  EXPECT_EQ(reason(guard.admit(with_id("after-restart"), kNow + 5)), "accepted");
}

TEST(ReplayGuard, JournalIsFoldedIntoTheSnapshot) {
  test::TempDir dir;
  ReplayLimits limits;
  limits.journal_max = 3;
  {
    ReplayGuard guard(dir.path(), kSkew, limits);
    for (int i = 0; i < 10; ++i)
      EXPECT_EQ(reason(guard.admit(with_id("id-" + std::to_string(i)), kNow + i)), "accepted");
  }
  ASSERT_TRUE(test::file_exists(dir.file("replay.json")));
  EXPECT_EQ(test::file_mode(dir.file("replay.json")), 0600);
  auto snapshot = test::parse_json(test::read_file(dir.file("replay.json")));
  ASSERT_TRUE(snapshot.IsObject());
  const std::string journal = test::read_file(dir.file("replay.journal"));
  EXPECT_LE(std::count(journal.begin(), journal.end(), '\n'), 3);

  ReplayGuard guard(dir.path(), kSkew, limits);
  EXPECT_EQ(guard.remembered_ids(), 10u);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(reason(guard.admit(with_id("id-" + std::to_string(i)), kNow + 20)), "duplicate_id")
        << i;
}

TEST(ReplayGuard, TornJournalLineIsIgnored) {
  test::TempDir dir;
  {
    ReplayGuard guard(dir.path(), kSkew);
    EXPECT_EQ(reason(guard.admit(with_id("whole"), kNow)), "accepted");
  }
  // A crash in the middle of an append.
  const std::string journal = dir.file("replay.journal");
  test::write_file(journal, test::read_file(journal) + R"({"t":1795000000,"ids":["tor)", 0600);
  {
    ReplayGuard guard(dir.path(), kSkew);
    EXPECT_EQ(reason(guard.admit(with_id("whole"), kNow)), "duplicate_id");
    EXPECT_EQ(reason(guard.admit(with_id("after-tear"), kNow)), "accepted");
  }
  ReplayGuard guard(dir.path(), kSkew);
  EXPECT_EQ(reason(guard.admit(with_id("after-tear"), kNow)), "duplicate_id");
  EXPECT_EQ(guard.remembered_ids(), 2u);
}

TEST(ReplayGuard, MemoryIsBounded) {
  test::TempDir dir;
  ReplayLimits limits;
  limits.max_ids = 100;
  limits.journal_max = 40;
  {
    ReplayGuard guard(dir.path(), kSkew, limits);
    for (int i = 0; i < 250; ++i)
      ASSERT_EQ(reason(guard.admit(with_id("id-" + std::to_string(i)), kNow)), "accepted");
    // Pruning happens on the next admission.
    EXPECT_LE(guard.remembered_ids(), 101u);
  }
  ReplayGuard guard(dir.path(), kSkew, limits);
  guard.admit(request(), kNow);
  EXPECT_LE(guard.remembered_ids(), 100u);
  EXPECT_EQ(reason(guard.admit(with_id("id-249"), kNow)), "duplicate_id");  // the newest stay
  EXPECT_EQ(reason(guard.admit(with_id("id-0"), kNow)), "accepted");        // the oldest went
  // The files stay small too.
  EXPECT_LT(test::read_file(dir.file("replay.json")).size(), 100u * 64);
}

TEST(ReplayGuard, IsSafeAcrossThreads) {
  test::TempDir dir;
  ReplayGuard guard(dir.path(), kSkew);
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i)
        if (!guard.admit(with_id("shared-" + std::to_string(i)), kNow)) ++accepted;
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(accepted.load(), 50);  // each id exactly once
}

}  // namespace
}  // namespace pa
