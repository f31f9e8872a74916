// Issue 13 as an operator and a server see it: the key pool (SPEC 3.4), the key store's device
// index, the metrics (SPEC section 8) read by a real prometheus-node-exporter and checked by
// promtool, the counters in the retained status, and `send`'s progress on a terminal.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "agent_harness.hpp"
#include "intake/envelope.hpp"
#include "keystore/key_store.hpp"

namespace pa::test {
namespace {

namespace fs = std::filesystem;

// "name{labels}" -> value, from a Prometheus text (the metrics file or node_exporter's page).
std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> values;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    values[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return values;
}

double metric(const std::map<std::string, double>& values, const std::string& series) {
  const auto it = values.find(series);
  return it == values.end() ? -1 : it->second;
}

// Polls the metrics file until `ready` holds for its values (bounded); the last values read.
std::map<std::string, double> wait_metrics(
    const std::string& path, const std::function<bool(const std::map<std::string, double>&)>& ready,
    std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::map<std::string, double> values;
  while (std::chrono::steady_clock::now() < deadline) {
    if (file_exists(path)) {
      values = parse_metrics(read_file(path));
      if (ready(values)) return values;
    }
    std::this_thread::sleep_for(100ms);
  }
  return values;
}

const std::string kPoolKeys = "provision_agent_key_pool_keys";
const std::string kPoolHits = "provision_agent_key_pool_hits_total";
const std::string kPoolMisses = "provision_agent_key_pool_misses_total";
const std::string kPoolTarget = "provision_agent_key_pool_target";

class SpeedTest : public ::testing::Test {
 protected:
  // An agent writing its metrics to <scratch>/metrics/provision_agent.prom, with TMPDIR at
  // <scratch>/tmp: everything it could write is under its root or the scratch folder.
  std::unique_ptr<Agent> make_agent(std::map<std::string, std::string> env = {}) {
    fs::create_directories(scratch_.file("metrics"));
    fs::create_directories(scratch_.file("tmp"));
    metrics_file_ = scratch_.file("metrics/provision_agent.prom");
    env.emplace("PROVISION_METRICS_FILE", metrics_file_);
    env.emplace("TMPDIR", scratch_.file("tmp"));
    return std::make_unique<Agent>(broker_.port(), std::move(env));
  }

  // Sends generate_and_publish_key for `device`; the response (status ok expected).
  rapidjson::Document generate(const std::string& device, const std::string& request_id) {
    observer_->publish("provision/" + device + "/request",
                       fmt::format(R"({{"request_id":"{}"}})", request_id));
    auto response = wait_response(*observer_, device, request_id);
    if (!response) return parse_json("null");
    return parse_json(response->payload);
  }

  Broker broker_;
  std::unique_ptr<MqttClient> observer_ = make_observer(broker_.port());
  TempDir scratch_;
  std::string metrics_file_;
};

// Every file under `root` whose text holds a PEM private key, relative to `root`.
std::set<std::string> files_with_private_keys(const std::string& root) {
  std::set<std::string> found;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    if (read_file(entry.path().string()).find("PRIVATE KEY-----") != std::string::npos)
      found.insert(fs::relative(entry.path(), root).string());
  }
  return found;
}

TEST_F(SpeedTest, PoolAnswersWithUniquePairsThatMatchTheirFilesAndRefills) {
  auto agent = make_agent({{"PROVISION_KEY_POOL", "2"}});
  agent->start();
  ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
  TempDir checks_;  // the test's own files, apart from the agent's
  std::set<std::string> fingerprints;
  for (int i = 0; i < 3; ++i) {
    // Requests spaced so that the pool is full again before each.
    const auto before = wait_metrics(metrics_file_, [&](const auto& m) {
      return metric(m, kPoolKeys) == 2 && metric(m, kPoolHits) == i;
    });
    ASSERT_EQ(metric(before, kPoolKeys), 2) << "the pool did not fill up";
    const std::string device = unique_name("pool-dev-");
    auto response = generate(device, device + "-r");
    ASSERT_TRUE(response.IsObject());
    ASSERT_EQ(json_string(response, "status"), "ok") << json_string(response["error"], "message");
    const std::string fingerprint = json_string(response, "fingerprint");
    // The pair on disk is the one answered: the public file's fingerprint, and the private key
    // derives that public key.
    const std::string dir = agent->device_dir(device);
    EXPECT_EQ(openssl_fingerprint(dir + "/sensor_public.pem"), fingerprint);
    const std::string derived_pem = checks_.file("derived.pem");
    const auto derived =
        run_command("openssl pkey -in " + shell_quote(dir + "/sensor_private.pem") +
                    " -pubout -out " + shell_quote(derived_pem));
    ASSERT_EQ(derived.exit_code, 0) << derived.output;
    EXPECT_EQ(openssl_fingerprint(derived_pem), fingerprint);
    EXPECT_TRUE(fingerprints.insert(fingerprint).second) << "a pair was handed out twice";
  }
  // Answered from the pool, every time, and refilled after each.
  const auto after = wait_metrics(metrics_file_, [](const auto& m) {
    return metric(m, kPoolHits) == 3 && metric(m, kPoolKeys) == 2;
  });
  EXPECT_EQ(metric(after, kPoolHits), 3);
  EXPECT_EQ(metric(after, kPoolMisses), 0);
  EXPECT_EQ(metric(after, kPoolKeys), 2);
  EXPECT_GE(
      metric(after,
             "provision_agent_key_generation_seconds_count{key_type=\"ec-p256\",path=\"pool\"}"),
      5);
  EXPECT_EQ(
      metric(after,
             "provision_agent_key_generation_seconds_count{key_type=\"ec-p256\",path=\"request\"}"),
      -1)
      << "no request waited for a generation";
  EXPECT_EQ(
      metric(after,
             "provision_agent_requests_total{action=\"generate_and_publish_key\",outcome=\"ok\"}"),
      3);

  // The two pairs waiting in the pool are nowhere on disk: the only private keys under the agent's
  // root (key store, state folder) are the three stored and the agent key, and there are none
  // in its TMPDIR or beside its metrics file; the same once it stopped.
  std::set<std::string> expected = {"state/agent_private.pem"};
  for (const auto& entry : fs::recursive_directory_iterator(agent->keys_dir()))
    if (entry.path().filename() == "sensor_private.pem")
      expected.insert(fs::relative(entry.path(), agent->root()).string());
  EXPECT_EQ(expected.size(), 4u);
  for (int running = 1; running >= 0; --running) {
    EXPECT_EQ(files_with_private_keys(agent->root()), expected) << "running: " << running;
    EXPECT_EQ(files_with_private_keys(scratch_.path()), std::set<std::string>{});
    if (running) {
      EXPECT_EQ(agent->stop(), 0);
    }
  }
}

TEST_F(SpeedTest, PoolGeneratesAtIdlePriority) {
  auto agent = make_agent({{"PROVISION_KEY_POOL", "1"}});
  agent->start();
  ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
  std::string policy;
  for (const auto& task : fs::directory_iterator(fmt::format("/proc/{}/task", agent->pid()))) {
    if (read_file(task.path().string() + "/comm") != "pa-keypool\n") continue;
    // /proc/<pid>/task/<tid>/stat field 41 is the scheduling policy; SCHED_IDLE is 5.
    const std::string stat = read_file(task.path().string() + "/stat");
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int number = 3; fields >> field && number < 41; ++number) {
    }
    policy = field;
  }
  EXPECT_EQ(policy, "5") << "no pa-keypool thread at SCHED_IDLE";
}

TEST_F(SpeedTest, PoolOffGeneratesPerRequestAsBefore) {
  auto agent = make_agent({{"PROVISION_KEY_POOL", "0"}});
  agent->start();
  ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
  const std::string device = unique_name("nopool-");
  auto response = generate(device, device + "-r");
  ASSERT_EQ(json_string(response, "status"), "ok");
  EXPECT_EQ(openssl_fingerprint(agent->device_dir(device) + "/sensor_public.pem"),
            json_string(response, "fingerprint"));
  const auto values = wait_metrics(metrics_file_, [](const auto& m) {
    return metric(m,
                  "provision_agent_key_generation_seconds_count{key_type=\"ec-p256\",path="
                  "\"request\"}") == 1;
  });
  EXPECT_EQ(
      metric(values,
             "provision_agent_key_generation_seconds_count{key_type=\"ec-p256\",path=\"request\"}"),
      1);
  EXPECT_EQ(metric(values, kPoolTarget), 0);
  EXPECT_EQ(metric(values, kPoolHits), 0);
  EXPECT_EQ(metric(values, kPoolMisses), 0);
  for (const auto& task : fs::directory_iterator(fmt::format("/proc/{}/task", agent->pid())))
    EXPECT_NE(read_file(task.path().string() + "/comm"), "pa-keypool\n");
}

TEST_F(SpeedTest, PoolSizeOutOfRangeIsAConfigurationError) {
  auto agent = make_agent({{"PROVISION_KEY_POOL", "65"}});
  agent->start();
  EXPECT_EQ(agent->wait_exit(15s), 78);
  EXPECT_NE(agent->log().find("invalid PROVISION_KEY_POOL=\"65\""), std::string::npos)
      << agent->log();
}

// A real prometheus-node-exporter on 127.0.0.1 with only its textfile collector serves our
// counters, and they move after requests; promtool accepts the file as written.
TEST_F(SpeedTest, NodeExporterServesTheCountersAndTheyMove) {
  auto agent = make_agent();
  agent->start();
  ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
  ASSERT_FALSE(wait_metrics(metrics_file_, [](const auto& m) { return !m.empty(); }).empty());
  const auto check = run_command("promtool check metrics < " + shell_quote(metrics_file_));
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(check.output, "");

  const int port = free_port();
  Process exporter({"/usr/bin/prometheus-node-exporter",
                    fmt::format("--web.listen-address=127.0.0.1:{}", port),
                    "--collector.disable-defaults", "--collector.textfile",
                    "--collector.textfile.directory=" + scratch_.file("metrics")});
  ASSERT_TRUE(wait_for_port(port, 15s)) << exporter.log();
  auto scrape = [&] {
    const auto page = run_command(fmt::format("curl -sf http://127.0.0.1:{}/metrics", port));
    EXPECT_EQ(page.exit_code, 0) << page.output;
    return parse_metrics(page.output);
  };
  const std::string ok =
      "provision_agent_requests_total{action=\"generate_and_publish_key\",outcome=\"ok\"}";
  const std::string refused =
      "provision_agent_requests_total{action=\"other\",outcome=\"unknown_action\"}";
  // The file is sampled every 2 s: the connection shows once it is written after it.
  ASSERT_EQ(metric(wait_metrics(metrics_file_,
                                [](const auto& m) {
                                  return metric(m, "provision_agent_broker_connected") == 1;
                                }),
                   "provision_agent_broker_connected"),
            1);
  auto before = scrape();
  EXPECT_EQ(metric(before, "provision_agent_broker_connected"), 1);
  EXPECT_EQ(metric(before, ok), -1);
  EXPECT_EQ(metric(before, "node_textfile_scrape_error"), 0);

  const std::string device = unique_name("exported-");
  ASSERT_EQ(json_string(generate(device, device + "-r"), "status"), "ok");
  observer_->publish("provision/" + device + "/request",
                     R"({"request_id":"x1","action":"no_such_action"})");
  ASSERT_TRUE(wait_response(*observer_, device, "x1"));
  std::map<std::string, double> after;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    after = scrape();
    if (metric(after, ok) == 1 && metric(after, refused) == 1 &&
        metric(after, "provision_agent_keys{key_type=\"ec-p256\"}") == 1)
      break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(metric(after, ok), 1);
  EXPECT_EQ(metric(after, refused), 1) << "an unknown action is counted under \"other\"";
  EXPECT_EQ(metric(after, "provision_agent_keys{key_type=\"ec-p256\"}"), 1);
  EXPECT_GE(metric(after, "provision_agent_audit_sequence"), 2);  // generate + publish
  exporter.stop();
}

// The same counters in the retained status, refreshed (at most once a minute; here once a
// second: PA_STATUS_INTERVAL_SECONDS, for tests only).
TEST_F(SpeedTest, RetainedStatusCarriesTheCounters) {
  auto agent = make_agent({{"PA_STATUS_INTERVAL_SECONDS", "1"}, {"PROVISION_KEY_POOL", "1"}});
  agent->start();
  ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
  const std::string device = unique_name("status-");
  ASSERT_EQ(json_string(generate(device, device + "-r"), "status"), "ok");
  auto status = observer_->wait_for(agent->status_topic(), 20s, [](const Message& message) {
    auto json = parse_json(message.payload);
    if (json.HasParseError() || !json.HasMember("metrics")) return false;
    const auto& m = json["metrics"];
    return m.HasMember("requests_total") && m["requests_total"].IsObject() &&
           m["requests_total"].HasMember("generate_and_publish_key");
  });
  ASSERT_TRUE(status) << agent->log();
  auto json = parse_json(status->payload);
  EXPECT_EQ(json_string(json, "status"), "online");
  EXPECT_EQ(json_string(json, "agent_id"), agent->client_id());
  const auto& m = json["metrics"];
  EXPECT_EQ(m["requests_total"]["generate_and_publish_key"]["ok"].GetInt64(), 1);
  EXPECT_EQ(m["broker_connected"].GetInt64(), 1);
  EXPECT_EQ(m["keys"]["ec-p256"].GetInt64(), 1);
  EXPECT_EQ(m["key_pool_target"].GetInt64(), 1);
  EXPECT_TRUE(m.HasMember("key_pool_hits_total"));
  EXPECT_TRUE(m.HasMember("sessions_lost_total"));
  EXPECT_TRUE(m.HasMember("spool_depth"));
  // What a server that subscribes later gets: the retained status with the counters.
  MqttClient late(broker_.port());
  late.subscribe(agent->status_topic());
  auto retained = late.wait_for(agent->status_topic(), 10s);
  ASSERT_TRUE(retained);
  EXPECT_TRUE(parse_json(retained->payload).HasMember("metrics"));
}

// Decryption looks the device up in the index: right after a restart, and after a device folder
// was removed by hand (noticed: the store is scanned again, once).
TEST_F(SpeedTest, EncryptedRequestsFindTheirKeysThroughTheIndex) {
  auto agent = make_agent();
  const std::string device = unique_name("indexed-");
  std::string public_pem;
  {
    keystore::KeyStore store(agent->keys_dir());
    store.store(std::string("alice"), device,
                keystore::generate_key_pair(keystore::KeyType::rsa2048), false);
    const auto bob = keystore::generate_key_pair(keystore::KeyType::rsa2048);
    store.store(std::string("bob"), device, bob, false);
    public_pem = bob.public_pem;
  }
  auto encrypted_publish = [&](const std::string& request_id) {
    const std::string plaintext = fmt::format(
        R"({{"device_id":"{}","action":"publish_key","user_id":"bob","request_id":"{}"}})", device,
        request_id);
    observer_->publish("provision/" + device + "/request",
                       e2ee::envelope_json(e2ee::seal_envelope(plaintext, public_pem)));
    auto response = wait_response(*observer_, device, request_id);
    return response ? parse_json(response->payload) : parse_json("null");
  };
  for (int start = 0; start < 2; ++start) {  // a first start, then a restart
    observer_->clear();                      // the online status of this start, not the last one's
    agent->start();
    ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
    auto response = encrypted_publish(fmt::format("r{}", start));
    ASSERT_TRUE(response.IsObject());
    EXPECT_EQ(json_string(response, "status"), "ok") << agent->log();
    EXPECT_TRUE(response["encrypted"].GetBool());
    ASSERT_EQ(agent->stop(), 0);
  }
  observer_->clear();
  agent->start();
  ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
  fs::remove_all(agent->keys_dir() + "/alice/" + device);  // behind the agent's back
  auto response = encrypted_publish("after-removal");
  EXPECT_EQ(json_string(response, "status"), "ok") << agent->log();
  const auto values = wait_metrics(metrics_file_, [](const auto& m) {
    return metric(m, "provision_agent_key_index_rescans_total") == 1;
  });
  EXPECT_EQ(metric(values, "provision_agent_key_index_rescans_total"), 1);
  EXPECT_EQ(metric(values, "provision_agent_keys{key_type=\"rsa-2048\"}"), 1);
  auto again = encrypted_publish("again");
  EXPECT_EQ(json_string(again, "status"), "ok");
  ASSERT_EQ(agent->stop(), 0);
  EXPECT_EQ(
      metric(parse_metrics(read_file(metrics_file_)), "provision_agent_key_index_rescans_total"), 1)
      << "the index was right again after one scan";

  // `keys verify` finds the index and the store in agreement.
  const auto verify = run_command(agent_shell_command() + " --keys-dir " +
                                  shell_quote(agent->keys_dir()) + " keys verify");
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_EQ(verify.output.find("FAIL"), std::string::npos) << verify.output;
}

// `send` for a batch shows devices done, failed and the rate on a terminal, and nothing extra
// in a script.
TEST_F(SpeedTest, SendShowsBatchProgressOnATerminalOnly) {
  auto agent = make_agent();
  agent->start();
  ASSERT_TRUE(wait_online(*observer_, *agent)) << agent->log();
  auto send = [&](const std::string& prefix) {
    return fmt::format(
        "{} --mqtt-host 127.0.0.1 --mqtt-port {} --client-id {} send generate {}-a {}-b {}-c "
        "--wait 30",
        agent_shell_command(), broker_.port(), unique_name("sender-"), prefix, prefix, prefix);
  };
  const std::string piped = unique_name("piped-");
  const auto quiet = run_command(send(piped));
  EXPECT_EQ(quiet.exit_code, 0) << quiet.output;
  EXPECT_EQ(quiet.output.find("devices done"), std::string::npos) << quiet.output;
  EXPECT_NE(quiet.output.find(piped + "-c response"), std::string::npos);
  // script(1) gives the command a terminal.
  const std::string shown = unique_name("tty-");
  const auto terminal = run_command("script -qec " + shell_quote(send(shown)) + " /dev/null");
  EXPECT_EQ(terminal.exit_code, 0) << terminal.output;
  EXPECT_NE(terminal.output.find("3/3 devices done, 0 failed"), std::string::npos)
      << terminal.output;
  EXPECT_NE(terminal.output.find(shown + "-c response"), std::string::npos);
}

}  // namespace
}  // namespace pa::test
