// The agent as a systemd service (SPEC section 8): sd_notify READY/STATUS/WATCHDOG/STOPPING read
// from a real notify socket, native journal entries under a real systemd-journald, no secret in
// any log line, and the exit statuses systemd's Restart= and RestartPreventExitStatus= rely on.
#include <gtest/gtest.h>
#include <sys/poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "agent_harness.hpp"
#include "notify_socket.hpp"

namespace pa::test {
namespace {

using Clock = std::chrono::steady_clock;

bool is_online(const Message& message, const Agent& agent) {
  auto json = parse_json(message.payload);
  return !json.HasParseError() && json_string(json, "status") == "online" &&
         json_string(json, "agent_id") == agent.client_id();
}

// The retained status a client subscribing now receives.
std::optional<Message> retained_status(int port, const Agent& agent,
                                       MqttClientOptions options = {}) {
  MqttClient late(port, std::move(options));
  late.subscribe(agent.status_topic());
  return late.wait_for(agent.status_topic(), 5s);
}

// The environment agent_harness.hpp's Agent gives, for tests that start the binary themselves
// (through a wrapper, or to send it a signal by its PID).
ProcessOptions agent_options(int port, const TempDir& root, const std::string& client_id,
                             std::map<std::string, std::string> extra = {}) {
  ProcessOptions options;
  options.clean_env = true;
  options.env = {
      {"MQTT_HOST", "127.0.0.1"},
      {"MQTT_PORT", std::to_string(port)},
      {"MQTT_CLIENT_ID", client_id},
      {"PROVISION_KEYS_DIR", root.file("sensor_keys")},
      {"STATE_DIRECTORY", root.file("state")},
      {"PROVISION_PLUGIN_DIR", PA_PLUGIN_BUILD_DIR},
      {"PROVISION_KEY_TYPE", "ec-p256"},
      {"PROVISION_E2EE_POLICY", "off"},
      {"LOG_LEVEL", "info"},
  };
  for (auto& [name, value] : extra) options.env[name] = value;
  options.working_dir = root.path();
  return options;
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

TEST(ServiceNotify, ReadyOnlyOnceSubscribedAndAnnounced) {
  Broker broker;
  broker.stop();  // its port is known, but nobody listens yet: a Pi booting before its network
  NotifySocket notify;
  Agent agent(broker.port(), {{"NOTIFY_SOCKET", notify.path()}});
  agent.start();

  // The fallback is 30 s: without a broker there is no READY in the first seconds, and STATUS=
  // says why.
  EXPECT_FALSE(notify.wait_for(is_ready, 4s)) << notify.transcript();
  EXPECT_TRUE(notify.wait_for(status_has("still trying to reach the broker"), 1s))
      << notify.transcript();

  broker.start();
  auto ready = notify.wait_for(is_ready, 40s);
  ASSERT_TRUE(ready) << "no READY=1 after the broker came up\n" << notify.transcript();
  // The broker stores a retained message before it acknowledges it, and READY waits for that
  // acknowledgement: whoever is told "ready" finds the agent announced.
  auto status = retained_status(broker.port(), agent);
  ASSERT_TRUE(status) << "no retained status when READY=1 arrived";
  EXPECT_TRUE(is_online(*status, agent)) << status->payload;
  EXPECT_NE(notify_field(ready->text, "STATUS").find("connected to broker"), std::string::npos)
      << ready->text;
  EXPECT_EQ(agent.stop(), 0);
}

TEST(ServiceNotify, StatusWatchdogAndStopping) {
  Broker broker;
  auto observer = make_observer(broker.port());
  NotifySocket notify;
  // WATCHDOG_USEC as systemd sets it for WatchdogSec=2: the agent pings every second.
  Agent agent(broker.port(), {{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "2000000"}});
  agent.start();
  auto ready = notify.wait_for(is_ready, 20s);
  ASSERT_TRUE(ready) << notify.transcript();
  auto status = retained_status(broker.port(), agent);
  ASSERT_TRUE(status && is_online(*status, agent)) << "READY=1 before the online status";
  const std::string ready_status = notify_field(ready->text, "STATUS");
  EXPECT_NE(ready_status.find(fmt::format("connected to broker 127.0.0.1:{}", broker.port())),
            std::string::npos)
      << ready_status;
  EXPECT_NE(ready_status.find("0 request(s) served"), std::string::npos) << ready_status;

  observer->publish("provision/svc01/request", R"({"request_id":"svc-ok"})");
  auto ok = wait_response(*observer, "svc01", "svc-ok");
  ASSERT_TRUE(ok);
  EXPECT_EQ(json_string(parse_json(ok->payload), "status"), "ok") << ok->payload;
  EXPECT_TRUE(notify.wait_for(status_has("1 request(s) served"), 10s)) << notify.transcript();

  observer->publish("provision/svc02/request", R"({"request_id":"svc-bad","device_id":"other"})");
  auto bad = wait_response(*observer, "svc02", "svc-bad");
  ASSERT_TRUE(bad);
  EXPECT_EQ(error_code(parse_json(bad->payload)), "device_mismatch") << bad->payload;
  // The error is logged before the worker counts the request: wait for a line with both.
  auto error_status = notify.wait_for(
      [](const Notification& n) {
        return status_has("last error: device_mismatch for svc02")(n) &&
               status_has("2 request(s) served")(n);
      },
      10s);
  EXPECT_TRUE(error_status) << notify.transcript();

  // Pings at half the watchdog interval, from the event loop, for as long as it turns.
  const std::size_t before = notify.received().size();
  notify.collect(3500ms);
  std::size_t pings = 0;
  for (std::size_t i = before; i < notify.received().size(); ++i)
    if (is_watchdog(notify.received()[i])) ++pings;
  EXPECT_GE(pings, 3u) << notify.transcript();
  EXPECT_LE(pings, 5u) << "pings faster than half the interval\n" << notify.transcript();

  EXPECT_EQ(agent.stop(), 0) << "SIGTERM is a clean stop";
  EXPECT_TRUE(notify.wait_for(is_stopping, 2s)) << notify.transcript();
}

TEST(ServiceNotify, ReadyAfterFallbackWhenBrokerUnreachable) {
  const int port = free_port();  // nothing listens there
  NotifySocket notify;
  // PA_READY_FALLBACK_SECONDS shortens SPEC section 8's 30 s for this test only.
  Agent agent(port, {{"NOTIFY_SOCKET", notify.path()}, {"PA_READY_FALLBACK_SECONDS", "3"}});
  const auto started = Clock::now();
  agent.start();
  auto ready = notify.wait_for(is_ready, 20s);
  ASSERT_TRUE(ready) << "no READY=1 after the fallback\n" << notify.transcript();
  EXPECT_GE(ready->at - started, 2500ms) << "READY=1 before the fallback time";
  const std::string status = notify_field(ready->text, "STATUS");
  EXPECT_NE(status.find("still trying to reach the broker"), std::string::npos) << status;
  EXPECT_NE(status.find(fmt::format("127.0.0.1:{}", port)), std::string::npos) << status;
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_TRUE(notify.wait_for(is_stopping, 2s)) << notify.transcript();
}

// ---------------------------------------------------------------------------------------------
// journald

std::vector<rapidjson::Document> read_journal(const std::string& path) {
  std::vector<rapidjson::Document> entries;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    entries.push_back(parse_json(line));
  }
  return entries;
}

// The entry that reports the outcome of a request (plugins log about it too, without OUTCOME).
const rapidjson::Document* outcome_entry(const std::vector<rapidjson::Document>& entries,
                                         const std::string& request_id) {
  for (const auto& entry : entries)
    if (!entry.HasParseError() && json_string(entry, "REQUEST_ID") == request_id &&
        json_has(entry, "OUTCOME"))
      return &entry;
  return nullptr;
}

// How journald_session.sh gets a mount namespace of its own (it mounts a tmpfs on /run): as root
// `unshare --mount`; as another user an unprivileged user namespace in which that user is root
// (`unshare --user --map-root-user`); where the system forbids those (user namespaces turned off,
// or no right to mount in them) `sudo -n`, as scripts/deps.sh gets root for apt-get. Each is
// tried by mounting a tmpfs on /run in a throwaway namespace.
struct JournaldLauncher {
  std::vector<std::string> unshare;  // the words before the script; empty when nothing works
  bool via_sudo = false;             // run `unshare` through sudo -n
  std::string refusals;              // what each attempt answered, for the failure message
};

JournaldLauncher journald_launcher() {
  JournaldLauncher launcher;
  auto works = [&](const std::string& how, const std::string& prefix) {
    const auto result =
        run_command(prefix + " --mount --fork /bin/sh -c 'mount -t tmpfs tmpfs /run'");
    if (result.exit_code == 0) return true;
    launcher.refusals += fmt::format("{}: {}\n", how, result.output);
    return false;
  };
  if (::geteuid() == 0) {
    if (works("unshare --mount", "/usr/bin/unshare")) launcher.unshare = {"/usr/bin/unshare"};
  } else if (works("an unprivileged user namespace", "/usr/bin/unshare --user --map-root-user")) {
    launcher.unshare = {"/usr/bin/unshare", "--user", "--map-root-user"};
  } else if (works("sudo -n", "/usr/bin/sudo -n /usr/bin/unshare")) {
    launcher.unshare = {"/usr/bin/unshare"};
    launcher.via_sudo = true;
  }
  if (!launcher.unshare.empty())
    launcher.unshare.insert(launcher.unshare.end(), {"--mount", "--fork", "--kill-child=SIGTERM"});
  return launcher;
}

TEST(ServiceJournal, NativeEntriesCarryTheRequestFields) {
  // Not a skip: CI must run this, so a missing part is a failure that names it.
  ASSERT_EQ(::access("/lib/systemd/systemd-journald", X_OK), 0)
      << "/lib/systemd/systemd-journald is missing (scripts/deps.sh installs systemd)";
  const JournaldLauncher launcher = journald_launcher();
  ASSERT_FALSE(launcher.unshare.empty())
      << "no mount namespace for a private journald: as root, unshare --mount is refused; as "
         "another user, neither an unprivileged user namespace nor sudo -n is allowed\n"
      << launcher.refusals;
  Broker broker;
  auto observer = make_observer(broker.port());
  TempDir root;
  TempDir work;
  const std::string client_id = unique_name("pa-it-journal-");
  // PA_DEVICE: for the script's journalctl DEVICE_ID=pH01. MQTT 5: a request's traceparent user
  // property becomes the TRACEPARENT field (SPEC 3.6).
  ProcessOptions options = agent_options(broker.port(), root, client_id,
                                         {{"PA_DEVICE", "pH01"}, {"MQTT_PROTOCOL", "5"}});
  options.log_file = work.file("session.log");
  std::vector<std::string> session_command;
  if (launcher.via_sudo) {
    // sudo resets the environment: env passes the agent's on, and the user to run the agent as,
    // so that the key store it writes stays this user's.
    options.env["PA_AGENT_UID"] = std::to_string(::getuid());
    options.env["PA_AGENT_GID"] = std::to_string(::getgid());
    session_command = {"/usr/bin/sudo", "-n", "/usr/bin/env", "-i"};
    for (const auto& [name, value] : options.env) session_command.push_back(name + "=" + value);
    session_command.push_back("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
  }
  session_command.insert(session_command.end(), launcher.unshare.begin(), launcher.unshare.end());
  session_command.insert(session_command.end(),
                         {"/bin/sh", PA_SERVICE_SCRIPT_DIR "/journald_session.sh", work.path()});
  for (auto& word : agent_command()) session_command.push_back(word);
  Process session(session_command, options);

  const std::string status_topic = "provision/agents/" + client_id + "/status";
  ASSERT_TRUE(observer->wait_for(status_topic, kOnlineTimeout))
      << "the agent under journald never came online\n"
      << read_file(work.file("session.log"));
  observer->publish("provision/pH01/request", R"({"request_id":"jr-ok","user_id":"u7"})");
  auto ok = wait_response(*observer, "pH01", "jr-ok");
  ASSERT_TRUE(ok);
  EXPECT_EQ(json_string(parse_json(ok->payload), "status"), "ok") << ok->payload;
  observer->publish("provision/pH01/request", R"({"request_id":"jr-bad","device_id":"pH02"})");
  auto bad = wait_response(*observer, "pH01", "jr-bad");
  ASSERT_TRUE(bad);
  const std::string traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  ASSERT_EQ(run_command(fmt::format("mosquitto_pub -V 5 -h 127.0.0.1 -p {} -q 1 -t "
                                    "provision/pH01/request -m '{{\"request_id\":\"jr-trace\"}}' "
                                    "-D publish user-property traceparent {}",
                                    broker.port(), traceparent))
                .exit_code,
            0);
  ASSERT_TRUE(wait_response(*observer, "pH01", "jr-trace"));

  write_file(work.file("stop"), "");
  auto exit = session.wait_exit(60s);
  ASSERT_TRUE(exit) << "the journald session did not end\n" << read_file(work.file("session.log"));
  ASSERT_EQ(*exit, 0) << read_file(work.file("session.log"));
  EXPECT_EQ(read_file(work.file("agent.exit")), "0\n") << "SIGTERM under journald";

  // journalctl DEVICE_ID=pH01 finds the native entries (a stderr line would carry no field).
  const auto entries = read_journal(work.file("device.json"));
  const std::string all = read_file(work.file("journal.json"));
  ASSERT_FALSE(entries.empty()) << "journalctl DEVICE_ID=pH01 found nothing; the journal:\n" << all;
  const rapidjson::Document* served = outcome_entry(entries, "jr-ok");
  ASSERT_NE(served, nullptr) << all;
  EXPECT_EQ(json_string(*served, "_TRANSPORT"), "journal") << "not a native entry";
  EXPECT_EQ(json_string(*served, "SYSLOG_IDENTIFIER"), "provision-agent");
  EXPECT_EQ(json_string(*served, "DEVICE_ID"), "pH01");
  EXPECT_EQ(json_string(*served, "USER_ID"), "u7");
  EXPECT_EQ(json_string(*served, "ACTION"), "generate_and_publish_key");
  EXPECT_EQ(json_string(*served, "OUTCOME"), "ok");
  EXPECT_EQ(json_string(*served, "PRIORITY"), "6");
  EXPECT_FALSE(json_has(*served, "ERROR_CODE"));

  const rapidjson::Document* refused = outcome_entry(entries, "jr-bad");
  ASSERT_NE(refused, nullptr) << all;
  EXPECT_EQ(json_string(*refused, "OUTCOME"), "error");
  EXPECT_EQ(json_string(*refused, "ERROR_CODE"), "device_mismatch");
  EXPECT_EQ(json_string(*refused, "PRIORITY"), "4");

  const rapidjson::Document* traced = outcome_entry(entries, "jr-trace");
  ASSERT_NE(traced, nullptr) << all;
  EXPECT_EQ(json_string(*traced, "TRACEPARENT"), traceparent);
  EXPECT_FALSE(json_has(*served, "TRACEPARENT")) << "none given, none logged";

  for (const auto& entry : entries)
    EXPECT_EQ(json_string(entry, "DEVICE_ID"), "pH01") << "journalctl DEVICE_ID= did not filter";
}

// ---------------------------------------------------------------------------------------------
// Secrets

TEST(ServiceLogs, NoPasswordOrPrivateKeyInAnyLogLine) {
  const std::string password = "s3cr3t-pw";
  const std::map<std::string, std::string> credentials = {
      {"MQTT_USER", "agent"}, {"MQTT_PASSWORD", password}, {"LOG_LEVEL", "debug"}};
  auto leaks = [&](const std::string& log) {
    return log.find(password) != std::string::npos || log.find("PRIVATE KEY") != std::string::npos;
  };

  // A broker that wants another password: refused, retried, logged.
  Broker strict(BrokerOptions{false, std::make_pair(std::string("agent"), std::string("other-pw")),
                              std::nullopt});
  Agent refused(strict.port(), credentials);
  refused.start();
  EXPECT_TRUE(wait_until([&] { return refused.log().find("refused") != std::string::npos; }, 15s))
      << "no refusal logged";
  EXPECT_EQ(refused.stop(), 0);
  EXPECT_FALSE(leaks(refused.log())) << refused.log();

  // The right password: serve a key generation and a publish of the stored key.
  Broker broker(BrokerOptions{false, std::make_pair(std::string("agent"), password), std::nullopt});
  MqttClientOptions login;
  login.username = "agent";
  login.password = password;
  auto observer = make_observer(broker.port(), login);
  Agent agent(broker.port(), credentials);
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  observer->publish("provision/sec01/request", R"({"request_id":"sec-gen"})");
  auto generated = wait_response(*observer, "sec01", "sec-gen");
  ASSERT_TRUE(generated);
  EXPECT_EQ(json_string(parse_json(generated->payload), "status"), "ok") << generated->payload;
  observer->publish("provision/sec01/request",
                    R"({"request_id":"sec-pub","action":"publish_key"})");
  ASSERT_TRUE(wait_response(*observer, "sec01", "sec-pub"));
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_NE(agent.log().find("sec-gen"), std::string::npos) << "the debug log is not the one read";
  EXPECT_FALSE(leaks(agent.log())) << agent.log();

  // TLS with a client key to a broker that speaks no TLS: handshake errors, logged.
  TempDir tls_dir;
  const TlsFiles tls = Broker::make_tls_files(tls_dir);
  auto tls_credentials = credentials;
  tls_credentials.insert({{"MQTT_USE_TLS", "true"},
                          {"MQTT_CA_CERTS", tls.ca_cert},
                          {"MQTT_CERTFILE", tls.server_cert},
                          {"MQTT_KEYFILE", tls.server_key}});
  Agent tls_agent(broker.port(), tls_credentials);
  tls_agent.start();
  EXPECT_TRUE(wait_until(
      [&] { return tls_agent.log().find("retrying with back-off") != std::string::npos; }, 15s))
      << "no TLS failure logged\n"
      << tls_agent.log();
  EXPECT_EQ(tls_agent.stop(), 0);
  EXPECT_FALSE(leaks(tls_agent.log())) << tls_agent.log();
}

// ---------------------------------------------------------------------------------------------
// Exit statuses: 0 clean stop, 78 configuration error (systemd does not restart), 1 other fatal
// error (systemd restarts after RestartSec=).

TEST(ServiceExit, ZeroOnSigtermAndSigint) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  EXPECT_EQ(agent.stop(), 0);

  // SIGINT, as Ctrl-C in a terminal sends it.
  TempDir root;
  const std::string client_id = unique_name("pa-it-sigint-");
  std::vector<std::string> command = agent_command();
  command.push_back("run");
  Process interrupted(command, agent_options(broker.port(), root, client_id));
  ASSERT_TRUE(observer->wait_for("provision/agents/" + client_id + "/status", kOnlineTimeout))
      << interrupted.log();
  interrupted.signal(SIGINT);
  auto status = interrupted.wait_exit(15s);
  ASSERT_TRUE(status) << "SIGINT did not stop the agent\n" << interrupted.log();
  EXPECT_EQ(*status, 0) << interrupted.log();
  EXPECT_NE(interrupted.log().find("stopped after serving"), std::string::npos)
      << interrupted.log();
}

TEST(ServiceExit, SeventyEightOnAConfigurationError) {
  Agent agent(free_port(), {{"MQTT_PORT", "not-a-port"}});
  agent.start();
  auto status = agent.wait_exit(15s);
  ASSERT_TRUE(status) << "a bad configuration did not stop the agent";
  EXPECT_EQ(*status, 78);
  EXPECT_NE(agent.log().find("MQTT_PORT"), std::string::npos) << agent.log();
}

TEST(ServiceExit, OneOnAnotherFatalError) {
  // Not a configuration error, so systemd restarts after RestartSec=: another agent already holds
  // the key store (SPEC section 5).
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent first(broker.port());
  first.start();
  ASSERT_TRUE(wait_online(*observer, first));
  Agent second(broker.port(), {{"PROVISION_KEYS_DIR", first.keys_dir()}});
  second.start();
  auto locked = second.wait_exit(30s);
  ASSERT_TRUE(locked) << second.log();
  EXPECT_EQ(*locked, 1) << second.log();
  EXPECT_NE(second.log().find("(PID " + std::to_string(first.pid()) + ")"), std::string::npos)
      << second.log();

  // And the system short of resources: 256 worker threads need about 2 GiB of stack address
  // space and `ulimit -v 1 GiB` does not have it. Under qemu-user the limit would cut the
  // emulator's own memory, and a sanitizer's shadow memory needs more than that: there the lock
  // above is the fatal error checked.
  if (*PA_AGENT_EMULATOR || PA_SANITIZED) return;
  TempDir root;
  std::vector<std::string> command{"/bin/sh", "-c",
                                   "ulimit -s 8192 && ulimit -v 1048576 && exec \"$@\" run", "sh"};
  for (auto& word : agent_command()) command.push_back(word);
  Process agent(command, agent_options(free_port(), root, unique_name("pa-it-fatal-"),
                                       {{"PROVISION_WORKERS", "256"}}));
  auto status = agent.wait_exit(30s);
  ASSERT_TRUE(status) << agent.log();
  EXPECT_EQ(*status, 1) << agent.log();
  EXPECT_NE(agent.log().find("cannot start 256 worker thread(s)"), std::string::npos)
      << agent.log();
}

}  // namespace
}  // namespace pa::test
