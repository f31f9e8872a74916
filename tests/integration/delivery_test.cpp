// Delivery (SPEC section 3.4): nothing lost, nothing done twice. The real agent and a real
// mosquitto: the agent killed with SIGKILL at random moments of bursts of requests, stopped while
// its drain runs out, unable to write its spool; requests retried after completion, with other
// content and while still queued; MQTT 5 requests whose Message Expiry passes while they wait.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "agent_harness.hpp"
#include "spool.hpp"

namespace pa::test {
namespace {

using Clock = std::chrono::steady_clock;

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

// What one response said.
struct Answer {
  std::string request_id;
  std::string status;       // ok or error
  std::string code;         // error.code
  std::string fingerprint;  // on success with a key
  bool duplicate = false;   // "duplicate": true, a retry answered from its record
};

Answer answer_of(const Message& message) {
  Answer answer;
  const auto json = parse_json(message.payload);
  if (json.HasParseError() || !json.IsObject()) {
    answer.status = "unparsable: " + message.payload;
    return answer;
  }
  answer.request_id = json_string(json, "request_id");
  answer.status = json_string(json, "status");
  answer.code = error_code(json);
  answer.fingerprint = json_string(json, "fingerprint");
  const auto duplicate = json.FindMember("duplicate");
  answer.duplicate =
      duplicate != json.MemberEnd() && duplicate->value.IsBool() && duplicate->value.GetBool();
  return answer;
}

// Paths below `root` (relative) whose name marks a temporary file of an interrupted write.
std::vector<std::string> temporary_files(const std::string& root) {
  std::vector<std::string> found;
  for (const std::string& path : list_tree(root))
    if (path.find(".tmp-") != std::string::npos) found.push_back(path);
  return found;
}

// The requests the agent's intake spool holds unanswered: what the agent has taken from the
// broker (a publisher's PUBACK only says the broker has it).
std::size_t spooled_requests(const Agent& agent) {
  return read_spool_image(read_file(agent.state_dir() + "/intake.spool")).pending.size();
}

// ---------------------------------------------------------------------------------------------
// A drain that runs out, a full queue, a spool that cannot be written

// SPEC 3.4: the spool holds up to PROVISION_QUEUE_MAX waiting requests plus those running, and a
// restart serves every one of them, the ones that were running included.
TEST(DeliveryQueue, AFullSpoolIsServedWholeAfterACrash) {
  PluginFolder plugins;
  plugins.add_hold_action();
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins.path()},
                              {"PROVISION_WORKERS", "2"},
                              {"PROVISION_QUEUE_MAX", "2"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  // Both workers held, two requests waiting: the spool is full.
  for (const char* device : {"full1", "full2"}) {
    observer->publish(fmt::format("provision/{}/request", device),
                      fmt::format(R"({{"action":"hold","request_id":"{}-hold"}})", device));
    ASSERT_TRUE(plugins.wait_started(device)) << agent.log();
  }
  for (const char* device : {"full3", "full4"})
    observer->publish(fmt::format("provision/{}/request", device),
                      fmt::format(R"({{"request_id":"{}-r"}})", device));
  ASSERT_TRUE(wait_until([&] { return spooled_requests(agent) == 4; }, 10s)) << agent.log();
  agent.kill();

  plugins.release("full1");
  plugins.release("full2");
  agent.start();
  for (const char* device : {"full1", "full2"}) {
    auto response = wait_response(*observer, device, std::string(device) + "-hold");
    ASSERT_TRUE(response) << device << " was left in the spool\n" << agent.log();
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  }
  for (const char* device : {"full3", "full4"}) {
    auto response = wait_response(*observer, device, std::string(device) + "-r");
    ASSERT_TRUE(response) << device << " was left in the spool\n" << agent.log();
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  }
  EXPECT_EQ(agent.stop(), 0);
}

// SPEC section 2: beyond PROVISION_QUEUE_MAX waiting requests a request is answered busy at once,
// also while one device's backlog leaves a worker idle; it is never taken silently.
TEST(DeliveryQueue, ARequestBeyondTheQueueIsAnsweredBusyWhileAWorkerIsIdle) {
  PluginFolder plugins;
  plugins.add_hold_action();
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins.path()},
                              {"PROVISION_WORKERS", "2"},
                              {"PROVISION_QUEUE_MAX", "2"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  // One device: its first request held, two waiting behind it; the second worker has nothing.
  observer->publish("provision/backlog/request", R"({"action":"hold","request_id":"k-hold"})");
  ASSERT_TRUE(plugins.wait_started("backlog")) << agent.log();
  for (const char* id : {"k-1", "k-2"})
    observer->publish("provision/backlog/request",
                      fmt::format(R"({{"action":"publish_key","request_id":"{}"}})", id));
  ASSERT_TRUE(wait_until([&] { return spooled_requests(agent) == 3; }, 10s)) << agent.log();

  observer->publish("provision/other/request", R"({"request_id":"o-1"})");
  auto busy = wait_response(*observer, "other", "o-1", 10s);
  ASSERT_TRUE(busy) << "the request beyond the queue was taken and not answered\n" << agent.log();
  EXPECT_EQ(error_code(parse_json(busy->payload)), "busy") << busy->payload;
  EXPECT_FALSE(file_exists(agent.device_dir("other")));

  plugins.release("backlog");
  for (const char* id : {"k-hold", "k-1", "k-2"})
    EXPECT_TRUE(wait_response(*observer, "backlog", id)) << id;
  EXPECT_EQ(agent.stop(), 0);
}

// Sets the soft RLIMIT_FSIZE of another process (ours, so no privilege is needed), keeping the
// hard limit; RLIM_INFINITY as `soft` gives back the hard limit.
bool set_file_size_limit(pid_t pid, rlim_t soft) {
  struct rlimit current {};
  if (::prlimit(pid, RLIMIT_FSIZE, nullptr, &current) != 0) return false;
  const struct rlimit limit { soft == RLIM_INFINITY ? current.rlim_max : soft, current.rlim_max };
  return ::prlimit(pid, RLIMIT_FSIZE, &limit, nullptr) == 0;
}

// SPEC 3.4: a request the spool cannot hold is answered storage_failed as it arrives and is never
// served later (nothing accepted silently); once writes work again the agent serves as before.
// The spool file is already open, so modes cannot make its append fail; a file size limit at its
// current size does, for real (EFBIG from the kernel), as any user and without a mount. (A full
// file system would need root for a small tmpfs.)
TEST(DeliveryStorage, AFailedSpoolWriteIsAnsweredStorageFailedAndNothingIsAcceptedSilently) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  for (int i = 0; i < 3; ++i) {
    observer->publish(fmt::format("provision/warm{}/request", i),
                      fmt::format(R"({{"request_id":"w-{}"}})", i));
    ASSERT_TRUE(wait_response(*observer, fmt::format("warm{}", i), fmt::format("w-{}", i)));
  }
  const std::string spool = agent.state_dir() + "/intake.spool";
  struct stat info {};
  ASSERT_EQ(::stat(spool.c_str(), &info), 0) << spool;
  ASSERT_TRUE(set_file_size_limit(agent.pid(), static_cast<rlim_t>(info.st_size)));

  constexpr int kRefused = 5;
  for (int i = 0; i < kRefused; ++i) {
    const std::string device = fmt::format("full{}", i);
    observer->publish(fmt::format("provision/{}/request", device),
                      fmt::format(R"({{"request_id":"f-{}"}})", i));
    auto response = wait_response(*observer, device, fmt::format("f-{}", i), 10s);
    ASSERT_TRUE(response) << "f-" << i << " was not answered at once"
                          << (agent.running() ? "" : "; the agent died");
    auto json = parse_json(response->payload);
    EXPECT_EQ(error_code(json), "storage_failed") << response->payload;
    EXPECT_FALSE(file_exists(agent.device_dir(device))) << device;
  }
  ASSERT_TRUE(agent.running()) << "a failed write ended the agent";

  // Writes work again: the server's retries are served, as new requests.
  ASSERT_TRUE(set_file_size_limit(agent.pid(), RLIM_INFINITY));
  for (int i = 0; i < kRefused; ++i) {
    const std::string device = fmt::format("full{}", i);
    observer->publish(fmt::format("provision/{}/request", device),
                      fmt::format(R"({{"request_id":"f-{}"}})", i));
    ASSERT_TRUE(wait_until(
        [&] { return responses_with_id(*observer, device, fmt::format("f-{}", i)).size() == 2; },
        30s))
        << agent.log();
    const Answer retried =
        answer_of(responses_with_id(*observer, device, fmt::format("f-{}", i)).back());
    EXPECT_EQ(retried.status, "ok") << retried.code;
    EXPECT_FALSE(retried.duplicate);
    EXPECT_TRUE(file_exists(agent.device_dir(device) + "/sensor_private.pem")) << device;
  }

  // Nothing of the refused ones comes back after a restart.
  EXPECT_EQ(agent.stop(), 0);
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  observer->publish("provision/marker/request", R"({"request_id":"m-1"})");
  ASSERT_TRUE(wait_response(*observer, "marker", "m-1"));
  for (int i = 0; i < kRefused; ++i)
    EXPECT_EQ(responses_with_id(*observer, fmt::format("full{}", i), fmt::format("f-{}", i)).size(),
              2u)
        << "f-" << i;
  EXPECT_EQ(agent.stop(), 0);
}

// The bench's PA_BENCH_UNSPOOLED=1 (undocumented) turns the spool's writes off, says so in the
// log, and the agent still serves.
TEST(DeliveryStorage, TheBenchSwitchTurnsTheSpoolWritesOff) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PA_BENCH_UNSPOOLED", "1"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  const std::string spool = agent.state_dir() + "/intake.spool";
  const std::string before = read_file(spool);
  for (int i = 0; i < 3; ++i) {
    observer->publish(fmt::format("provision/bench{}/request", i),
                      fmt::format(R"({{"request_id":"b-{}"}})", i));
    auto response = wait_response(*observer, fmt::format("bench{}", i), fmt::format("b-{}", i));
    ASSERT_TRUE(response);
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  }
  EXPECT_EQ(read_file(spool), before) << "the spool was written";
  EXPECT_NE(agent.log().find("PA_BENCH_UNSPOOLED=1"), std::string::npos) << agent.log();
  EXPECT_EQ(agent.stop(), 0);
}

// A kill while the spool or the ledger rewrote a file (the spool does at every start) leaves the
// temporary copy; in a crash loop (Restart=always) one more each time, each up to the spool's
// size. The next start removes them, and a link among them goes without its target.
TEST(DeliveryStorage, CopiesLeftByAnInterruptedRewriteAreRemovedAtStart) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  TempDir elsewhere;
  const std::string target = elsewhere.file("precious");
  write_file(target, "not the agent's\n", 0600);
  const std::vector<std::string> left = {".intake.spool.tmp-Ab12Cd", ".intake.spool.tmp-Ef34Gh",
                                         ".ledger.json.tmp-Ij56Kl", ".ledger.journal.tmp-Mn78Op"};
  for (const std::string& name : left) write_file(agent.state_dir() + "/" + name, "torn", 0600);
  ASSERT_EQ(::symlink(target.c_str(), (agent.state_dir() + "/.intake.spool.tmp-link").c_str()), 0);
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  EXPECT_EQ(temporary_files(agent.state_dir()), std::vector<std::string>{});
  EXPECT_FALSE(file_exists(agent.state_dir() + "/.intake.spool.tmp-link"));
  EXPECT_EQ(read_file(target), "not the agent's\n");
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace pa::test
