// The session's reconnect policy, client id conflict watch and broker list (SPEC 3.6), driven
// through minutes and hours of simulated time: no clock, no broker; and the session record the
// state folder keeps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <vector>

#include "mqtt/broker_list.hpp"
#include "mqtt/reconnect_policy.hpp"
#include "mqtt/session.hpp"

namespace pa::mqtt {
namespace {

using namespace std::chrono_literals;
using Change = ConflictWatch::Change;

// The most attempts any window of `window` holds, given the attempt times in order.
int most_in_any_window(const std::vector<Clock::time_point>& starts, Clock::duration window) {
  int most = 0;
  for (std::size_t i = 0; i < starts.size(); ++i) {
    int in_window = 0;
    for (std::size_t j = i; j < starts.size() && starts[j] - starts[i] < window; ++j) ++in_window;
    most = std::max(most, in_window);
  }
  return most;
}

TEST(ReconnectPolicy, BackOffDoublesFromOneSecondToAMinuteWithJitter) {
  ReconnectPolicy policy({}, 7);
  Clock::time_point now{};
  for (int failure = 0; failure < 10; ++failure) {
    policy.attempt_started(now);
    const Clock::time_point next = policy.after_failure(now);
    const Clock::duration delay = next - now;
    const Clock::duration full =
        std::min<Clock::duration>(Clock::duration(1s) * (1 << failure), 60s);
    EXPECT_GE(delay, full / 2) << "failure " << failure;
    EXPECT_LE(delay, full) << "failure " << failure;
    now = next;
  }
}

// What was measured on ca1caa2: the back-off reset at every CONNACK, so a broker that accepts and
// then closes the connection (at SUBSCRIBE, or a kick) saw about 70 connects a minute.
TEST(ReconnectPolicy, ABrokerThatAcceptsAndDropsGetsAtMostTenAttemptsAMinute) {
  ReconnectPolicy policy({}, 11);
  Clock::time_point now{};
  std::vector<Clock::time_point> starts;
  while (now < Clock::time_point(1h)) {
    policy.attempt_started(now);
    starts.push_back(now);
    now += 50ms;  // CONNACK, then closed: never stable
    now = policy.after_failure(now);
  }
  EXPECT_LE(most_in_any_window(starts, 60s), 10);
}

TEST(ReconnectPolicy, TheCapHoldsEvenWhenEveryConnectionIsStableAndShort) {
  // Stable after 1 s here, so the back-off starts over each time: only the window's cap is left.
  ReconnectLimits limits;
  limits.stable_after = 1s;
  limits.spread = 2s;
  ReconnectPolicy policy(limits, 3);
  Clock::time_point now{};
  std::vector<Clock::time_point> starts;
  for (int i = 0; i < 200; ++i) {
    policy.attempt_started(now);
    starts.push_back(now);
    now += 1500ms;
    policy.connection_stable();
    now = policy.after_loss(now);
  }
  EXPECT_LE(most_in_any_window(starts, 60s), 10);
  EXPECT_EQ(most_in_any_window(starts, 60s), 10) << "the cap, not the back-off, was the limit";
}

TEST(ReconnectPolicy, LosingAStableConnectionSpreadsTheFirstAttempt) {
  // A broker restart drops a fleet at once: the first attempts spread over the whole window.
  std::vector<double> delays;
  for (std::uint64_t seed = 0; seed < 2000; ++seed) {
    ReconnectPolicy policy({}, seed);
    policy.connection_stable();
    const Clock::time_point now{};
    delays.push_back(std::chrono::duration<double>(policy.after_loss(now) - now).count());
  }
  std::sort(delays.begin(), delays.end());
  EXPECT_GE(delays.front(), 1.0);
  EXPECT_LE(delays.back(), 30.0);
  // No second of the 29 holds more than a tenth of the fleet.
  std::vector<int> per_second(31, 0);
  for (double delay : delays) ++per_second[static_cast<std::size_t>(delay)];
  EXPECT_LT(*std::max_element(per_second.begin(), per_second.end()), 200);
}

TEST(ReconnectPolicy, AttemptsThatFailAfterALossStaySpread) {
  // An agent whose first attempt fell into the broker's outage does not return in its first
  // seconds together with every other such agent: the back-off goes on from the spread's scale.
  ReconnectPolicy policy({}, 9);
  policy.connection_stable();
  Clock::time_point now{};
  now = policy.after_loss(now);
  policy.attempt_started(now);
  const Clock::duration second = policy.after_failure(now) - now;
  EXPECT_GE(second, 16s);
  EXPECT_LE(second, 32s);
}

TEST(ReconnectPolicy, AConflictBacksOffToTheLongestDelay) {
  ReconnectPolicy policy({}, 5);
  const Clock::time_point now{};
  for (int i = 0; i < 20; ++i) {
    const Clock::duration delay = policy.after_conflict(now) - now;
    EXPECT_GE(delay, 60s);
    EXPECT_LE(delay, 120s);
  }
  // And stays long on ordinary failures until a connection is stable again.
  EXPECT_GE(policy.after_failure(now) - now, 30s);
  policy.connection_stable();
  EXPECT_LE(policy.after_failure(now) - now, 1s);
}

TEST(ConflictWatch, ThreeTakeoversInARowAreAConflict) {
  ConflictWatch watch;
  Clock::time_point now{};
  for (int i = 0; i < 2; ++i) {
    watch.connection_started(now);
    EXPECT_EQ(watch.evidence(now + 1s, "0x8E"), Change::none);
    EXPECT_EQ(watch.connection_ended(now + 1s, true, true), Change::none);
    now += 90s;  // the taking-over client held it meanwhile: the duration does not matter
  }
  watch.connection_started(now);
  EXPECT_EQ(watch.evidence(now, "0x8E"), Change::entered);
  EXPECT_TRUE(watch.in_conflict());
  EXPECT_EQ(watch.last_evidence(), "0x8E");
}

TEST(ConflictWatch, OneEvidencePerConnection) {
  ConflictWatch watch;
  const Clock::time_point now{};
  watch.connection_started(now);
  watch.evidence(now, "another instance online");
  watch.evidence(now, "0x8E");
  EXPECT_EQ(watch.connection_ended(now + 1s, true, true), Change::none);
  EXPECT_EQ(watch.streak(), 1);
}

TEST(ConflictWatch, Mqtt311CloseSoonAfterConnackCounts) {
  ConflictWatch watch;
  Clock::time_point now{};
  Change last = Change::none;
  for (int i = 0; i < 3; ++i) {
    watch.connection_started(now);
    last = watch.connection_ended(now + 2s, true, true);
    now += 10s;
  }
  EXPECT_EQ(last, Change::entered);
}

TEST(ConflictWatch, ClosesThatAreNoTakeoverBreakTheRow) {
  ConflictWatch watch;
  Clock::time_point now{};
  auto connection = [&](Clock::duration lasted, bool by_broker, bool subscribed) {
    watch.connection_started(now);
    now += lasted;
    const Change change = watch.connection_ended(now, by_broker, subscribed);
    now += 5s;
    return change;
  };
  connection(2s, true, true);
  connection(2s, true, true);
  EXPECT_EQ(watch.streak(), 2);
  // Closed at SUBSCRIBE: a refused subscription, not someone else's session.
  EXPECT_EQ(connection(2s, true, false), Change::none);
  EXPECT_EQ(watch.streak(), 0);
  connection(2s, true, true);
  connection(2s, true, true);
  // Our own keep-alive ended it: a network problem.
  EXPECT_EQ(connection(2s, false, true), Change::none);
  EXPECT_EQ(watch.streak(), 0);
  // A connection that lasted is no takeover with 3.1.1 (no reason code to say otherwise).
  connection(2s, true, true);
  connection(2s, true, true);
  EXPECT_EQ(connection(5min, true, true), Change::none);
  EXPECT_FALSE(watch.in_conflict());
}

TEST(ConflictWatch, AConflictClearsOnlyAfterQuietMinutes) {
  ConflictWatch watch;
  Clock::time_point now{};
  for (int i = 0; i < 3; ++i) {
    watch.connection_started(now);
    watch.evidence(now, "another instance online");
    watch.connection_ended(now + 1s, true, true);
    now += 90s;
  }
  ASSERT_TRUE(watch.in_conflict());
  // Still fighting: each connection sees the other instance again.
  watch.connection_started(now);
  watch.evidence(now, "another instance online");
  EXPECT_EQ(watch.tick(now + 2min), Change::none);
  // The other Pi got its own id: nobody takes the session any more.
  EXPECT_EQ(watch.tick(now + 2min + 59s), Change::none);
  EXPECT_EQ(watch.tick(now + 3min), Change::cleared);
  EXPECT_FALSE(watch.in_conflict());
  EXPECT_EQ(watch.streak(), 0);
}

TEST(BrokerList, NamesABrokerAsLogsAndTheStatusDo) {
  EXPECT_EQ(to_string(BrokerAddress{"a", 1884, false}), "a:1884");
  EXPECT_EQ(to_string(BrokerAddress{"::1", 1885, false}), "[::1]:1885");
}

// The session record in the state folder is read at every start: a torn, edited or foreign one
// must mean "no session known", never a made-up session start in the status.
TEST(SessionRecord, ReadsBackWhatWasWritten) {
  EXPECT_EQ(read_session_record(encode_session_record("pa-abc", 1795000000), "pa-abc"),
            std::optional<std::int64_t>(1795000000));
}

TEST(SessionRecord, AnythingButAWholeRecordOfThisClientIdMeansNoSession) {
  for (const char* record :
       {"", "\n", "pa-abc", "pa-abc \n", "pa-abc 1795000000", "pa-abc 17950x0000\n", "pa-abc -5\n",
        "pa-abc 0\n", "pa-abc +5\n", "pa-abc  5\n", "pa-abcd 5\n", "pa-ab 5\n",
        "pa-abc 99999999999999999999\n", "other 1795000000\n", "pa-abc 5\n\n"}) {
    SCOPED_TRACE(record);
    EXPECT_EQ(read_session_record(record, "pa-abc"), std::nullopt);
  }
}

}  // namespace
}  // namespace pa::mqtt
