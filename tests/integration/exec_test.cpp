// The bundled exec plugin (SPEC section 6): executables in <plugin folder>/exec.d/ serve the
// action of their name, get the request JSON on stdin, and are held to
// PROVISION_PLUGIN_EXEC_TIMEOUT. Its checks are as strict as the loader's: a loose exec.d or
// executable is not used, the executable is run from the descriptor it was checked on, its exit
// status ends the run, whatever it started dies with it, and it starts with default signal
// handling.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kOtherUid = 65534;  // nobody

// PIDs of the live processes whose command line contains `marker`.
std::vector<pid_t> processes_with(const std::string& marker) {
  std::vector<pid_t> found;
  DIR* proc = opendir("/proc");
  if (!proc) return found;
  while (const dirent* entry = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    std::string command_line = read_file(fmt::format("/proc/{}/cmdline", pid));
    if (command_line.find(marker) != std::string::npos) found.push_back(static_cast<pid_t>(pid));
  }
  closedir(proc);
  return found;
}

// Waits (bounded) until no process with `marker` in its command line is left.
bool none_left(const std::string& marker, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!processes_with(marker).empty()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// chown as root, or through sudo when the tests run as a user.
bool change_owner(const std::string& path, uid_t uid) {
  if (geteuid() == 0) return chown(path.c_str(), uid, static_cast<gid_t>(-1)) == 0;
  return run_command(fmt::format("sudo -n chown {} {}", uid, shell_quote(path))).exit_code == 0;
}

class ExecPlugin : public ::testing::Test {
 protected:
  void SetUp() override {
    plugins_ = fs::path(dir_.path()) / "plugins";
    exec_d_ = (plugins_ / "exec.d").string();
    fs::create_directories(exec_d_);
    for (const char* name : {"keygen.so", "revoke.so", "exec.so"})
      fs::copy_file(fs::path(PA_PLUGIN_BUILD_DIR) / name, plugins_ / name);
    chmod(dir_.path().c_str(), 0755);
    chmod(plugins_.c_str(), 0755);
    chmod(exec_d_.c_str(), 0755);
    // A copy of sleep whose path marks the processes the actions leave behind.
    lingering_ = dir_.file("lingering-sleep");
    fs::copy_file("/bin/sleep", lingering_);
    chmod(lingering_.c_str(), 0755);
    // Writes its stdin and environment where the test can read them.
    script("record", fmt::format("#!/bin/sh\ncat > {out}/$DEVICE_ID.json\n"
                                 "echo \"$DEVICE_ID $USER_ID $ACTION $REQUEST_ID $ENCRYPTED\" > "
                                 "{out}/$DEVICE_ID.env\necho recorded\n",
                                 fmt::arg("out", dir_.path())));
    // Leaves a marker when it starts, so tests know it is running without timing it.
    script("slow", fmt::format("#!/bin/sh\ntouch {}/started-$DEVICE_ID\nsleep 1\necho done\n",
                               dir_.path()));
    script("fail", "#!/bin/sh\necho 'sensor offline' >&2\nexit 3\n");
    // Killed at the time limit with its process group.
    script("hang", fmt::format("#!/bin/sh\n{} 1000 &\nsleep 30\necho never\n", lingering_));
    script("-bad-name", "#!/bin/sh\nexit 0\n");                // not an action name: ignored
    script("loose", "#!/bin/sh\nexit 0\n", 0777);              // world-writable: named in the log
    script("not-executable", "#!/bin/sh\nexit 0\n", 0644);     // ignored
    fs::copy_file("/bin/true", fs::path(exec_d_) / "native");  // a program, not a script
  }

  void TearDown() override {
    // Whatever a failing run left behind must not outlive the test.
    for (pid_t pid : processes_with(lingering_)) kill(pid, SIGKILL);
  }

  void script(const std::string& name, const std::string& body, int mode = 0755) {
    const std::string path = exec_d_ + "/" + name;
    write_file(path, body, mode);
    chmod(path.c_str(), static_cast<mode_t>(mode));  // past the umask
  }

  // `provision-agent plugins` for this plugin folder: the listing and the log lines.
  std::string plugins_listing() {
    auto result = run_command(fmt::format("PROVISION_PLUGIN_DIR={} {} plugins",
                                          shell_quote(plugins_.string()), agent_shell_command()));
    EXPECT_EQ(result.exit_code, 0) << result.output;
    return result.output;
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
  std::string exec_d_;
  std::string lingering_;
};

TEST_F(ExecPlugin, ListsTheExecutablesAsActions) {
  fs::create_symlink(exec_d_ + "/record", exec_d_ + "/linked");
  const std::string output = plugins_listing();
  EXPECT_NE(output.find("loaded  exec 1.1.0"), std::string::npos) << output;
  EXPECT_NE(output.find(": fail; hang; native; record; slow\n"), std::string::npos) << output;
  EXPECT_EQ(output.find("bad-name"), std::string::npos) << output;
  EXPECT_EQ(output.find("not-executable"), std::string::npos) << output;
  // Left out with the reason and the fix, as the loader names a loose plugin.
  EXPECT_NE(output.find(fmt::format("{0}/loose is group- and world-writable (mode 0777), so the "
                                    "action "
                                    "\"loose\" is not served; fix: chmod 755 {0}/loose",
                                    exec_d_)),
            std::string::npos)
      << output;
  EXPECT_NE(output.find(fmt::format("{}/linked is a symbolic link, so the action \"linked\" is "
                                    "not served",
                                    exec_d_)),
            std::string::npos)
      << output;
}

TEST_F(ExecPlugin, AnExecFolderOthersCanWriteServesNoActions) {
  for (const auto& [mode, who] : {std::pair{0775, "group-writable"}, {0757, "world-writable"}}) {
    chmod(exec_d_.c_str(), static_cast<mode_t>(mode));
    const std::string output = plugins_listing();
    EXPECT_NE(output.find("exec 1.1.0 (" + (plugins_ / "exec.so").string() +
                          "): (no actions configured)"),
              std::string::npos)
        << output;
    EXPECT_NE(output.find(fmt::format("{0} is {1} (mode {2:04o}), so no exec actions are served "
                                      "from it; fix: chmod 755 {0}",
                                      exec_d_, who, mode)),
              std::string::npos)
        << output;
  }

  // The running agent says the same and does not run the script.
  chmod(exec_d_.c_str(), 0775);
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  observer->publish("provision/pump01/request", R"({"action":"record","request_id":"l-1"})");
  auto response = wait_response(*observer, "pump01", "l-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(error_code(parse_json(response->payload)), "unknown_action") << response->payload;
  EXPECT_FALSE(file_exists(dir_.file("pump01.json")));
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_NE(agent.log().find(exec_d_ + " is group-writable (mode 0775)"), std::string::npos)
      << agent.log();
}

TEST_F(ExecPlugin, AnExecFolderOrExecutableOwnedByAnotherUserIsNotUsed) {
  const std::string record = exec_d_ + "/record";
  ASSERT_TRUE(change_owner(record, kOtherUid)) << "needs root or passwordless sudo";
  std::string output = plugins_listing();
  EXPECT_NE(output.find(": fail; hang; native; slow\n"), std::string::npos) << output;
  EXPECT_NE(output.find(fmt::format("{0} is owned by uid {1}, not {2}, so the action \"record\" "
                                    "is not served; fix: chown {2} {0}",
                                    record, kOtherUid, geteuid())),
            std::string::npos)
      << output;

  ASSERT_TRUE(change_owner(exec_d_, kOtherUid));
  output = plugins_listing();
  // Given back before any assertion can end the test, so the TempDir can be removed.
  ASSERT_TRUE(change_owner(exec_d_, geteuid()));
  EXPECT_NE(output.find("): (no actions configured)"), std::string::npos) << output;
  EXPECT_NE(output.find(fmt::format("{0} is owned by uid {1}, not {2}, so no exec actions are "
                                    "served from it; fix: chown {2} {0}",
                                    exec_d_, kOtherUid, geteuid())),
            std::string::npos)
      << output;
}

TEST_F(ExecPlugin, RunsTheActionWithTheRequestOnStdinAndHoldsItToTheTimeLimit) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()},
                              {"PROVISION_PLUGIN_EXEC_TIMEOUT", "1"}});
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
  EXPECT_TRUE(none_left(lingering_)) << "what the killed action started must die with it";

  // The device's queue moves on after the killed action.
  observer->publish("provision/pump01/request", R"({"request_id":"x-4"})");
  auto key = wait_response(*observer, "pump01", "x-4");
  ASSERT_TRUE(key);
  EXPECT_EQ(json_string(parse_json(key->payload), "status"), "ok");

  // A program runs from its descriptor as a script does.
  observer->publish("provision/pump01/request", R"({"action":"native","request_id":"x-5"})");
  auto native = wait_response(*observer, "pump01", "x-5");
  ASSERT_TRUE(native);
  EXPECT_EQ(json_string(parse_json(native->payload), "status"), "ok") << native->payload;
  EXPECT_NE(agent.log().find("fail said: sensor offline"), std::string::npos) << agent.log();
  EXPECT_EQ(agent.stop(), 0);
}

// What is checked at start is what runs: the executable is opened without following links and
// checked on the descriptor it is run from.
TEST_F(ExecPlugin, AnExecutableSwappedAfterStartIsCheckedAgain) {
  script("swap", "#!/bin/sh\nexit 0\n");
  const std::string swap = exec_d_ + "/swap";
  const std::string ran = dir_.file("ran");
  const std::string elsewhere = dir_.file("elsewhere");
  write_file(elsewhere, fmt::format("#!/bin/sh\necho $1 >> {}\n", ran), 0755);
  chmod(elsewhere.c_str(), 0755);

  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  fs::remove(swap);
  fs::create_symlink(elsewhere, swap);
  observer->publish("provision/pump01/request", R"({"action":"swap","request_id":"s-1"})");
  auto linked = wait_response(*observer, "pump01", "s-1");
  ASSERT_TRUE(linked) << agent.log();
  EXPECT_EQ(error_code(parse_json(linked->payload)), "plugin_failed") << linked->payload;
  EXPECT_NE(linked->payload.find("is a symbolic link"), std::string::npos) << linked->payload;
  EXPECT_FALSE(file_exists(ran)) << "the link was followed";

  // Another file renamed into its place is held to the same rules.
  const std::string replacement = dir_.file("replacement");
  write_file(replacement, fmt::format("#!/bin/sh\necho swapped >> {}\n", ran), 0775);
  chmod(replacement.c_str(), 0775);
  fs::rename(replacement, swap);
  observer->publish("provision/pump01/request", R"({"action":"swap","request_id":"s-2"})");
  auto loose = wait_response(*observer, "pump01", "s-2");
  ASSERT_TRUE(loose) << agent.log();
  EXPECT_EQ(error_code(parse_json(loose->payload)), "plugin_failed") << loose->payload;
  EXPECT_NE(loose->payload.find("is group-writable (mode 0775)"), std::string::npos)
      << loose->payload;
  EXPECT_FALSE(file_exists(ran)) << "a group-writable replacement was run";
  EXPECT_NE(
      agent.log().find(fmt::format("{0} is group-writable (mode 0775); fix: chmod 755 {0}", swap)),
      std::string::npos)
      << agent.log();

  // Once it is private again, it runs.
  chmod(swap.c_str(), 0755);
  observer->publish("provision/pump01/request", R"({"action":"swap","request_id":"s-3"})");
  auto fixed = wait_response(*observer, "pump01", "s-3");
  ASSERT_TRUE(fixed) << agent.log();
  EXPECT_EQ(json_string(parse_json(fixed->payload), "status"), "ok") << fixed->payload;
  EXPECT_EQ(read_file(ran), "swapped\n");

  // exec.d loosened after start: nothing in it runs any more.
  chmod(exec_d_.c_str(), 0775);
  observer->publish("provision/pump01/request", R"({"action":"swap","request_id":"s-4"})");
  auto loose_folder = wait_response(*observer, "pump01", "s-4");
  ASSERT_TRUE(loose_folder) << agent.log();
  EXPECT_EQ(error_code(parse_json(loose_folder->payload)), "plugin_failed")
      << loose_folder->payload;
  EXPECT_NE(loose_folder->payload.find("exec.d is group-writable (mode 0775)"), std::string::npos)
      << loose_folder->payload;
  EXPECT_EQ(read_file(ran), "swapped\n");
  EXPECT_EQ(agent.stop(), 0);
}

// A background child that keeps stdout open does not hold up the answer: the script's exit ends
// the run, and the child is killed.
TEST_F(ExecPlugin, TheExitStatusEndsTheRunNotTheEndOfItsOutput) {
  const std::string pid_file = dir_.file("background.pid");
  script("background", fmt::format("#!/bin/sh\n{} 1000 &\necho $! > {}\necho started\nexit 0\n",
                                   lingering_, pid_file));
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()},
                              {"PROVISION_PLUGIN_EXEC_TIMEOUT", "5"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  observer->publish("provision/pump01/request", R"({"action":"background","request_id":"g-1"})");
  auto response = wait_response(*observer, "pump01", "g-1", 15s);
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  EXPECT_FALSE(read_file(pid_file).empty()) << "the background child was not started";
  EXPECT_TRUE(none_left(lingering_)) << "the background child outlived the action";
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_NE(agent.log().find("background said: started"), std::string::npos) << agent.log();
  EXPECT_NE(agent.log().find("background left 1 process running; it was killed"), std::string::npos)
      << agent.log();
}

// "A script's own children are killed with it", also those that left its process group: one
// started with setsid and a double-forked daemon, after a normal exit and at the time limit.
TEST_F(ExecPlugin, ChildrenThatLeftTheProcessGroupAreKilledWithIt) {
  const std::string daemonize = fmt::format(
      "#!/bin/sh\n"
      "setsid {0} 1000 < /dev/null > /dev/null 2>&1 &\n"
      "echo $! > {1}/$ACTION-setsid.pid\n"
      "( {0} 1000 < /dev/null > /dev/null 2>&1 & echo $! > {1}/$ACTION-daemon.pid )\n",
      lingering_, dir_.path());
  script("daemonize", daemonize + "exit 0\n");
  script("daemonize_and_hang", daemonize + "sleep 30\n");
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()},
                              {"PROVISION_PLUGIN_EXEC_TIMEOUT", "1"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  observer->publish("provision/pump01/request", R"({"action":"daemonize","request_id":"c-1"})");
  auto exited = wait_response(*observer, "pump01", "c-1", 15s);
  ASSERT_TRUE(exited) << agent.log();
  EXPECT_EQ(json_string(parse_json(exited->payload), "status"), "ok") << exited->payload;
  for (const char* kind : {"setsid", "daemon"})
    EXPECT_FALSE(read_file(dir_.file(fmt::format("daemonize-{}.pid", kind))).empty()) << kind;
  EXPECT_TRUE(none_left(lingering_)) << "a child that left the process group survived";
  EXPECT_NE(agent.log().find("daemonize left 2 processes running; they were killed"),
            std::string::npos)
      << agent.log();

  observer->publish("provision/pump01/request",
                    R"({"action":"daemonize_and_hang","request_id":"c-2"})");
  auto hung = wait_response(*observer, "pump01", "c-2", 15s);
  ASSERT_TRUE(hung) << agent.log();
  EXPECT_EQ(error_code(parse_json(hung->payload)), "plugin_failed") << hung->payload;
  EXPECT_NE(hung->payload.find("did not finish within 1 s"), std::string::npos) << hung->payload;
  for (const char* kind : {"setsid", "daemon"})
    EXPECT_FALSE(read_file(dir_.file(fmt::format("daemonize_and_hang-{}.pid", kind))).empty())
        << kind;
  EXPECT_TRUE(none_left(lingering_)) << "a child that left the process group survived";
  EXPECT_EQ(agent.stop(), 0);
}

// Should the agent itself die mid-run, what the action started does not live on.
TEST_F(ExecPlugin, WhatAnActionStartedDiesWithTheAgent) {
  script("linger", fmt::format("#!/bin/sh\necho $$ > {1}/linger.pid\n"
                               "setsid {0} 1000 < /dev/null > /dev/null 2>&1 &\n"
                               "touch {1}/started-$DEVICE_ID\n{0} 1001\n",
                               lingering_, dir_.path()));
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins_.string()}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  observer->publish("provision/pump01/request", R"({"action":"linger","request_id":"k-1"})");
  ASSERT_TRUE(slow_started("pump01")) << agent.log();
  const std::string script_command_line =
      fmt::format("/proc/{}/cmdline", std::stoi(read_file(dir_.file("linger.pid"))));
  EXPECT_NE(read_file(script_command_line).find("/dev/fd/3"), std::string::npos)
      << "the script runs from its descriptor";
  agent.kill();
  EXPECT_TRUE(none_left(lingering_)) << "the action's children outlived the agent";
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (read_file(script_command_line).find("/dev/fd/3") != std::string::npos &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(read_file(script_command_line).find("/dev/fd/3"), std::string::npos)
      << "the action outlived the agent";
}

// A parent's ignored signals and blocked mask survive exec. The agent ignores SIGPIPE and SIGXFSZ
// itself; here it is also started with SIGUSR1 ignored and SIGUSR2 blocked, and none of it may
// reach the action. The script is bash because dash clears the signal mask when it starts.
TEST_F(ExecPlugin, TheActionStartsWithDefaultSignalHandling) {
  const std::string report = dir_.file("signals");
  script("signals",
         fmt::format("#!/bin/bash\ngrep -E '^Sig(Ign|Blk):' /proc/self/status > {}\n", report));
  Broker broker;
  auto observer = make_observer(broker.port());
  // The harness's Agent clears the mask it starts with, so this one is started here, under perl.
  TempDir root;
  mkdir(root.file("state").c_str(), 0700);
  const std::string client_id = unique_name("pa-it-exec-");
  ProcessOptions options;
  options.clean_env = true;
  options.working_dir = root.file("state");
  options.env = {{"MQTT_HOST", "127.0.0.1"},
                 {"MQTT_PORT", std::to_string(broker.port())},
                 {"MQTT_CLIENT_ID", client_id},
                 {"PROVISION_KEYS_DIR", root.file("sensor_keys")},
                 {"PROVISION_PLUGIN_DIR", plugins_.string()},
                 {"PROVISION_E2EE_POLICY", "off"},
                 {"STATE_DIRECTORY", root.file("state")}};
  std::vector<std::string> command = {
      "/usr/bin/perl", "-MPOSIX", "-e",
      "sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGUSR2)); $SIG{USR1} = 'IGNORE'; exec @ARGV"};
  for (const auto& word : agent_command()) command.push_back(word);
  command.push_back("run");
  Process agent(command, options);
  auto online = observer->wait_for(
      "provision/agents/" + client_id + "/status", kOnlineTimeout,
      [](const Message& message) { return message.payload.find("online") != std::string::npos; });
  ASSERT_TRUE(online) << agent.log();
  // The premise: the agent itself runs with SIGUSR1, SIGPIPE and SIGXFSZ ignored and SIGUSR2
  // blocked.
  const std::string agent_status = read_file(fmt::format("/proc/{}/status", agent.pid()));
  EXPECT_NE(agent_status.find("SigBlk:\t0000000000000800"), std::string::npos) << agent_status;
  EXPECT_NE(agent_status.find("SigIgn:\t0000000001001200"), std::string::npos) << agent_status;

  observer->publish("provision/pump01/request", R"({"action":"signals","request_id":"i-1"})");
  auto response = wait_response(*observer, "pump01", "i-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  EXPECT_EQ(read_file(report), "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
  EXPECT_EQ(agent.stop(), 0) << agent.log();
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
