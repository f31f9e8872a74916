// The bundled exec plugin (SPEC section 6): executables in <plugin folder>/exec.d/ serve the
// action of their name, get the request JSON on stdin, and are held to PROVISION_EXEC_TIMEOUT.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

namespace fs = std::filesystem;

class ExecPlugin : public ::testing::Test {
 protected:
  void SetUp() override {
    plugins_ = fs::path(dir_.path()) / "plugins";
    fs::create_directories(plugins_ / "exec.d");
    for (const char* name : {"keygen.so", "revoke.so", "exec.so"})
      fs::copy_file(fs::path(PA_PLUGIN_BUILD_DIR) / name, plugins_ / name);
    chmod(dir_.path().c_str(), 0755);
    chmod(plugins_.c_str(), 0755);
    chmod((plugins_ / "exec.d").c_str(), 0755);
    // Writes its stdin and environment where the test can read them.
    script("record", fmt::format("#!/bin/sh\ncat > {out}/$DEVICE_ID.json\n"
                                 "echo \"$DEVICE_ID $USER_ID $ACTION $REQUEST_ID $ENCRYPTED\" > "
                                 "{out}/$DEVICE_ID.env\necho recorded\n",
                                 fmt::arg("out", dir_.path())));
    // Leaves a marker when it starts, so tests know it is running without timing it.
    script("slow", fmt::format("#!/bin/sh\ntouch {}/started-$DEVICE_ID\nsleep 1\necho done\n",
                               dir_.path()));
    script("fail", "#!/bin/sh\necho 'sensor offline' >&2\nexit 3\n");
    script("hang", "#!/bin/sh\nsleep 30\necho never\n");    // the group is killed, sleep too
    script("-bad-name", "#!/bin/sh\nexit 0\n");             // not an action name: ignored
    script("loose", "#!/bin/sh\nexit 0\n", 0777);           // world-writable: ignored
    script("not-executable", "#!/bin/sh\nexit 0\n", 0644);  // ignored
  }

  void script(const std::string& name, const std::string& body, int mode = 0755) {
    const std::string path = (plugins_ / "exec.d" / name).string();
    write_file(path, body, mode);
    chmod(path.c_str(), static_cast<mode_t>(mode));  // past the umask
  }

  // Waits (bounded) for the slow action's start marker.
  bool slow_started(const std::string& device) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (file_exists(dir_.file("started-" + device))) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  TempDir dir_;
  fs::path plugins_;
};

TEST_F(ExecPlugin, ListsTheExecutablesAsActions) {
  auto result = run_command(fmt::format("PROVISION_PLUGIN_DIR={} {} plugins",
                                        shell_quote(plugins_.string()), agent_shell_command()));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("loaded  exec 1.0.0"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(": fail, hang, record, slow\n"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("bad-name"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("loose"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("not-executable"), std::string::npos) << result.output;
}

TEST_F(ExecPlugin, RunsTheActionWithTheRequestOnStdinAndHoldsItToTheTimeLimit) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(),
              {{"PROVISION_PLUGIN_DIR", plugins_.string()}, {"PROVISION_EXEC_TIMEOUT", "1"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  const std::string request =
      R"({"action":"record","user_id":"7","request_id":"x-1","valve":"open"})";
  observer->publish("provision/pump01/request", request);
  auto ok = wait_response(*observer, "pump01", "x-1");
  ASSERT_TRUE(ok) << agent.log();
  auto ok_json = parse_json(ok->payload);
  EXPECT_EQ(json_string(ok_json, "status"), "ok") << ok->payload;
  EXPECT_EQ(json_string(ok_json, "action"), "record");
  auto stdin_json = parse_json(read_file(dir_.file("pump01.json")));
  ASSERT_FALSE(stdin_json.HasParseError()) << read_file(dir_.file("pump01.json"));
  EXPECT_EQ(json_string(stdin_json, "valve"), "open");  // other fields reach the executable
  EXPECT_EQ(read_file(dir_.file("pump01.env")), "pump01 7 record x-1 0\n");

  observer->publish("provision/pump01/request", R"({"action":"fail","request_id":"x-2"})");
  auto failed = wait_response(*observer, "pump01", "x-2");
  ASSERT_TRUE(failed);
  auto failed_json = parse_json(failed->payload);
  EXPECT_EQ(error_code(failed_json), "plugin_failed") << failed->payload;
  EXPECT_NE(failed->payload.find("exited with status 3"), std::string::npos) << failed->payload;

  observer->publish("provision/pump01/request", R"({"action":"hang","request_id":"x-3"})");
  auto hung = wait_response(*observer, "pump01", "x-3", 15s);
  ASSERT_TRUE(hung) << "a hanging action must be killed and answered";
  EXPECT_EQ(error_code(parse_json(hung->payload)), "plugin_failed") << hung->payload;
  EXPECT_NE(hung->payload.find("did not finish within 1 s"), std::string::npos) << hung->payload;

  // The device's queue moves on after the killed action.
  observer->publish("provision/pump01/request", R"({"request_id":"x-4"})");
  auto key = wait_response(*observer, "pump01", "x-4");
  ASSERT_TRUE(key);
  EXPECT_EQ(json_string(parse_json(key->payload), "status"), "ok");
  EXPECT_NE(agent.log().find("fail said: sensor offline"), std::string::npos) << agent.log();
  EXPECT_EQ(agent.stop(), 0);
}

// SPEC section 2: beyond PROVISION_QUEUE_MAX waiting requests, "busy" at once, and nothing done.
TEST_F(ExecPlugin, AFullQueueIsAnsweredBusy) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()},
                              {"PROVISION_WORKERS", "1"},
                              {"PROVISION_QUEUE_MAX", "1"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  // The one worker runs the first for a second, the second waits, the third finds the queue full.
  observer->publish("provision/q1/request", R"({"action":"slow","request_id":"b-1"})");
  ASSERT_TRUE(slow_started("q1")) << agent.log();
  observer->publish("provision/q2/request", R"({"action":"slow","request_id":"b-2"})");
  observer->publish("provision/q3/request", R"({"request_id":"b-3"})");
  auto busy = wait_response(*observer, "q3", "b-3", 10s);
  ASSERT_TRUE(busy) << agent.log();
  EXPECT_EQ(error_code(parse_json(busy->payload)), "busy") << busy->payload;
  EXPECT_FALSE(file_exists(agent.device_dir("q3"))) << "a busy request must change nothing";
  for (const char* id : {"1", "2"}) {
    auto served = wait_response(*observer, std::string("q") + id, std::string("b-") + id);
    ASSERT_TRUE(served) << id;
    EXPECT_EQ(json_string(parse_json(served->payload), "status"), "ok") << served->payload;
  }
  EXPECT_EQ(agent.stop(), 0);
}

// SPEC section 8: SIGTERM lets work in flight finish (within 10 s) and answers it before exit 0.
TEST_F(ExecPlugin, SigtermFinishesTheRequestInFlight) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  observer->publish("provision/d1/request", R"({"action":"slow","request_id":"d-1"})");
  ASSERT_TRUE(slow_started("d1")) << agent.log();
  EXPECT_EQ(agent.stop(), 0);
  auto response = wait_response(*observer, "d1", "d-1", 5s);
  ASSERT_TRUE(response) << "the request in flight was not answered before exit: " << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  auto offline = observer->wait_for(agent.status_topic(), 5s, [](const Message& message) {
    return message.payload.find("offline") != std::string::npos;
  });
  EXPECT_TRUE(offline);
}

}  // namespace
}  // namespace pa::test
