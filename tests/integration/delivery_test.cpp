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

// Paths below `root` (relative) whose name marks a temporary file of an interrupted write.
std::vector<std::string> temporary_files(const std::string& root) {
  std::vector<std::string> found;
  for (const std::string& path : list_tree(root))
    if (path.find(".tmp-") != std::string::npos) found.push_back(path);
  return found;
}

// ---------------------------------------------------------------------------------------------
// A drain that runs out, a full queue, a spool that cannot be written

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
