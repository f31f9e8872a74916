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
#include "intake/spool.hpp"

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

// Every response the observer received, by request_id.
std::map<std::string, std::vector<Answer>> answers_by_id(const MqttClient& observer) {
  std::map<std::string, std::vector<Answer>> answers;
  for (const Message& message : observer.messages("provision/+/response")) {
    Answer answer = answer_of(message);
    answers[answer.request_id].push_back(std::move(answer));
  }
  return answers;
}

// The fingerprint of the public key the private key file derives, with the openssl CLI.
std::string derived_fingerprint(const std::string& private_pem_path) {
  auto result = run_command("openssl pkey -in " + shell_quote(private_pem_path) +
                            " -pubout -outform DER | openssl dgst -sha256 -binary | "
                            "openssl base64 -A");
  if (result.exit_code != 0) return "openssl failed: " + result.output;
  std::string base64 = result.output;
  while (!base64.empty() && (base64.back() == '=' || base64.back() == '\n')) base64.pop_back();
  return "SHA256:" + base64;
}

// Paths below `root` (relative) whose name marks a temporary file of an interrupted write.
std::vector<std::string> temporary_files(const std::string& root) {
  std::vector<std::string> found;
  for (const std::string& path : list_tree(root))
    if (path.find(".tmp-") != std::string::npos) found.push_back(path);
  return found;
}

// The seed of a randomised test: PA_TEST_SEED when set (to replay a failure), else a fresh one.
unsigned test_seed() {
  if (const char* text = std::getenv("PA_TEST_SEED"); text != nullptr && *text != '\0')
    return static_cast<unsigned>(std::strtoul(text, nullptr, 10));
  return std::random_device{}();
}

// The sum of N over the agent's "intake spool: N request(s) left unanswered" lines.
int recovered_from_spool(const std::string& log) {
  static const std::regex line(R"(intake spool: (\d+) request\(s\) left unanswered)");
  int total = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), line), end; it != end; ++it)
    total += std::stoi((*it)[1].str());
  return total;
}

// The requests the agent's intake spool holds unanswered: what the agent has taken from the
// broker (a publisher's PUBACK only says the broker has it).
std::size_t spooled_requests(const Agent& agent) {
  return read_spool_image(read_file(agent.state_dir() + "/intake.spool")).pending.size();
}

// ---------------------------------------------------------------------------------------------
// The crash harness

// What a request of the crash harness does to its device's key.
enum class Effect {
  keep,    // generate_and_publish_key without force: makes the one key, or publishes it
  rotate,  // update: a new key, the previous one kept as backup
  remove,  // delete
};

struct Planned {
  std::string device;
  std::string request_id;
  std::string topic;
  std::string payload;
  Effect effect = Effect::keep;
};

constexpr int kRounds = 4;
constexpr int kPlainDevices = 40;     // two plain generates each per round
constexpr int kRotatingDevices = 20;  // a generate first, then two updates per round
constexpr int kChurnDevices = 10;     // generate, update, delete in every round

std::string plain_device(int i) {
  return fmt::format("plain{:02}", i);
}
std::string rotating_device(int i) {
  return fmt::format("rot{:02}", i);
}
std::string churn_device(int i) {
  return fmt::format("churn{:02}", i);
}

Planned planned(const std::string& device, const std::string& request_id, Effect effect) {
  const char* topic = effect == Effect::rotate   ? "update"
                      : effect == Effect::remove ? "delete"
                                                 : "request";
  return Planned{device, request_id, fmt::format("provision/{}/{}", device, topic),
                 fmt::format(R"({{"request_id":"{}"}})", request_id), effect};
}

// One burst: every device's requests of the round, interleaved, so that each device has several
// requests in flight at once and a kill finds devices in every state.
std::vector<Planned> plan_round(int round) {
  std::vector<Planned> burst;
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < kPlainDevices && step < 2; ++i)
      burst.push_back(
          planned(plain_device(i), fmt::format("p{}-r{}-{}", i, round, step), Effect::keep));
    for (int i = 0; i < kRotatingDevices; ++i) {
      const int update = round == 0 ? step - 1 : step;  // round 0 starts with the generate
      if (round == 0 && step == 0)
        burst.push_back(planned(rotating_device(i), fmt::format("u{}-gen", i), Effect::keep));
      else if (update < 2)
        burst.push_back(planned(rotating_device(i), fmt::format("u{}-r{}-{}", i, round, update),
                                Effect::rotate));
    }
    for (int i = 0; i < kChurnDevices; ++i) {
      const Effect effect = step == 0 ? Effect::keep : step == 1 ? Effect::rotate : Effect::remove;
      burst.push_back(planned(churn_device(i), fmt::format("c{}-r{}-{}", i, round, step), effect));
    }
  }
  return burst;
}

std::size_t answered_among(const MqttClient& observer, const std::set<std::string>& ids) {
  std::size_t count = 0;
  for (const auto& [id, answers] : answers_by_id(observer)) count += ids.count(id);
  return count;
}

// SIGKILL at random moments of bursts of QoS 1 requests (and, in some rounds, while the restarted
// agent serves what the last run left), then a final start: every request is answered, no plain
// generate makes a second key, no update rotates twice, every pair on disk is whole and
// consistent. The broker's persistent session redelivers what the agent had not acknowledged;
// the intake spool holds what it had.
TEST(DeliveryCrash, NothingLostNothingDoneTwiceAcrossKills) {
  const unsigned seed = test_seed();
  std::cout << "[ seed     ] PA_TEST_SEED=" << seed << " replays this run\n";
  RecordProperty("seed", std::to_string(seed));
  std::mt19937 random(seed);

  Broker broker;
  auto observer = make_observer(broker.port());
  MqttClient publisher(broker.port());
  Agent agent(broker.port(), {{"LOG_LEVEL", "info"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  std::vector<Planned> requests;
  int kills = 0;
  for (int round = 0; round < kRounds; ++round) {
    const std::vector<Planned> burst = plan_round(round);
    requests.insert(requests.end(), burst.begin(), burst.end());
    std::set<std::string> ids;
    for (const Planned& request : burst) ids.insert(request.request_id);

    // Published from a thread of its own, so the kill may come while the burst still arrives;
    // what comes while the agent is down waits in its broker session.
    std::string publish_error;
    std::thread sender([&] {
      try {
        for (const Planned& request : burst) publisher.publish(request.topic, request.payload);
      } catch (const std::exception& error) {
        publish_error = error.what();
      }
    });
    const std::size_t answered_at_kill =
        std::uniform_int_distribution<std::size_t>(1, burst.size() * 9 / 10)(random);
    const bool reached = wait_until(
        [&] { return answered_among(*observer, ids) >= answered_at_kill || !agent.running(); },
        60s);
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 20)(random)));
    const bool was_running = agent.running();
    agent.kill();
    ++kills;
    sender.join();
    ASSERT_TRUE(publish_error.empty()) << publish_error;
    ASSERT_TRUE(reached && was_running)
        << "round " << round << ": " << answered_among(*observer, ids) << " of " << burst.size()
        << " answered, agent " << (was_running ? "running" : "dead");

    agent.start();
    if (random() % 2 == 0) {
      // Killed again while it serves what the last run left (or even before it subscribed).
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 300)(random)));
      agent.kill();
      ++kills;
      agent.start();
    }
  }

  // The final run answers everything still unanswered.
  std::set<std::string> missing;
  const bool all_answered = wait_until(
      [&] {
        const auto answers = answers_by_id(*observer);
        missing.clear();
        for (const Planned& request : requests)
          if (!answers.count(request.request_id)) missing.insert(request.request_id);
        return missing.empty();
      },
      90s);
  EXPECT_TRUE(all_answered) << missing.size() << " request(s) lost, e.g. " << *missing.begin();
  EXPECT_EQ(agent.stop(), 0);

  const auto answers = answers_by_id(*observer);
  std::size_t responses = 0, duplicates = 0;
  for (const auto& [id, list] : answers) {
    responses += list.size();
    for (const Answer& answer : list) duplicates += answer.duplicate ? 1 : 0;
  }
  const int recovered = recovered_from_spool(agent.log());
  std::cout << fmt::format(
      "[ delivery ] {} rounds, {} kills, {} requests, {} responses ({} duplicate: true), {} "
      "served from the spool after a restart, {} lost\n",
      kRounds, kills, requests.size(), responses, duplicates, recovered, missing.size());
  RecordProperty("requests", static_cast<int>(requests.size()));
  RecordProperty("kills", kills);
  RecordProperty("lost", static_cast<int>(missing.size()));
  RecordProperty("recovered_from_spool", recovered);

  // Every answer is a success, and all answers to one request agree on its key.
  std::map<std::string, std::string> fingerprint_of;  // request_id -> the key it reported
  for (const Planned& request : requests) {
    const auto it = answers.find(request.request_id);
    if (it == answers.end()) continue;
    for (const Answer& answer : it->second) {
      EXPECT_EQ(answer.status, "ok") << request.request_id << " " << answer.code;
      if (request.effect == Effect::remove) continue;
      EXPECT_FALSE(answer.fingerprint.empty()) << request.request_id;
      auto [known, inserted] = fingerprint_of.emplace(request.request_id, answer.fingerprint);
      EXPECT_EQ(known->second, answer.fingerprint)
          << request.request_id << " was answered with two different keys";
    }
  }

  // The keys each device published, and the keys its responses reported: a key published but
  // never reported would be a change done twice.
  std::map<std::string, std::set<std::string>> published;
  for (const Message& message : observer->messages("keys/+/public")) {
    if (message.payload.empty()) continue;  // a delete clearing the retained key
    const std::string device = message.topic.substr(5, message.topic.size() - 5 - 7);
    published[device].insert(json_string(parse_json(message.payload), "fingerprint"));
  }
  std::map<std::string, std::vector<std::string>> reported;  // device -> new keys, in order
  std::map<std::string, std::set<std::string>> reported_set;
  for (const Planned& request : requests) {
    const auto it = fingerprint_of.find(request.request_id);
    if (it == fingerprint_of.end()) continue;
    reported_set[request.device].insert(it->second);
    auto& sequence = reported[request.device];
    if (sequence.empty() || sequence.back() != it->second) sequence.push_back(it->second);
  }
  for (const auto& [device, keys] : published)
    for (const std::string& key : keys)
      EXPECT_TRUE(reported_set[device].count(key))
          << device << ": key " << key << " was published but no response reported it";

  auto expect_pair = [&](const std::string& folder, const std::string& expected,
                         const char* private_name, const char* public_name) {
    const std::string private_pem = folder + "/" + private_name;
    const std::string public_pem = folder + "/" + public_name;
    ASSERT_TRUE(file_exists(private_pem)) << private_pem;
    EXPECT_EQ(openssl_fingerprint(public_pem), expected) << public_pem;
    EXPECT_EQ(derived_fingerprint(private_pem), expected) << private_pem << " and its public key";
  };
  for (int i = 0; i < kPlainDevices; ++i) {
    const std::string device = plain_device(i);
    ASSERT_EQ(reported_set[device].size(), 1u) << device << " got more than one key";
    expect_pair(agent.device_dir(device), *reported_set[device].begin(), "sensor_private.pem",
                "sensor_public.pem");
  }
  const std::size_t rotating_keys = 1 + 2 * kRounds;  // the generate, then two updates a round
  for (int i = 0; i < kRotatingDevices; ++i) {
    const std::string device = rotating_device(i);
    const auto& sequence = reported[device];
    ASSERT_EQ(sequence.size(), rotating_keys) << device;
    EXPECT_EQ(reported_set[device].size(), rotating_keys) << device << ": a key came back";
    expect_pair(agent.device_dir(device), sequence.back(), "sensor_private.pem",
                "sensor_public.pem");
    // The backup is the key before the last: a last update done twice would have kept its own
    // first result instead.
    expect_pair(agent.device_dir(device), sequence[sequence.size() - 2], "sensor_private.prev.pem",
                "sensor_public.prev.pem");
  }
  for (int i = 0; i < kChurnDevices; ++i) {
    const std::string device = churn_device(i);
    EXPECT_EQ(reported_set[device].size(), static_cast<std::size_t>(2 * kRounds)) << device;
    EXPECT_FALSE(file_exists(agent.device_dir(device) + "/sensor_private.pem")) << device;
  }
  // Every pair in the store is whole and consistent, and no write was left half done.
  for (const std::string& path : list_tree(agent.keys_dir()))
    if (path.size() > 18 && path.compare(path.size() - 18, 18, "sensor_private.pem") == 0) {
      const std::string folder = agent.keys_dir() + "/" + path.substr(0, path.size() - 19);
      EXPECT_EQ(derived_fingerprint(folder + "/sensor_private.pem"),
                openssl_fingerprint(folder + "/sensor_public.pem"))
          << folder;
    }
  EXPECT_EQ(temporary_files(agent.keys_dir()), std::vector<std::string>{});
  EXPECT_EQ(temporary_files(agent.state_dir()), std::vector<std::string>{});
}

// ---------------------------------------------------------------------------------------------
// A drain that runs out, a full queue, a spool that cannot be written

// SPEC 3.4 and 8: SIGTERM gives queued work 10 s; what is still queued then stays in the spool
// (the broker has its acknowledgement, so only the spool has it) and the next start serves it.
TEST(DeliveryShutdown, RequestsLeftWhenTheDrainRanOutAreServedAtTheNextStart) {
  PluginFolder plugins;
  plugins.add_hold_action();
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins.path()},
                              {"PROVISION_WORKERS", "1"},
                              {"LOG_LEVEL", "info"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  // The one worker is held; twenty requests wait behind it (spooled before their PUBACK went).
  observer->publish("provision/held/request", R"({"action":"hold","request_id":"h-1"})");
  ASSERT_TRUE(plugins.wait_started("held")) << agent.log();
  constexpr int kQueued = 20;
  for (int i = 0; i < kQueued; ++i)
    observer->publish(fmt::format("provision/queued{:02}/request", i),
                      fmt::format(R"({{"request_id":"q-{}"}})", i));
  // The broker has them; the SIGTERM goes once the agent has them too (its spool says so).
  ASSERT_TRUE(wait_until([&] { return spooled_requests(agent) == 1 + kQueued; }, 10s))
      << agent.log();

  std::optional<int> exit_status;
  std::thread stopper([&] { exit_status = agent.stop(40s); });
  // The drain's 10 s run out while the worker is held; then the held action may end.
  std::this_thread::sleep_for(11s);
  plugins.release("held");
  stopper.join();
  EXPECT_EQ(exit_status, 0) << agent.log();
  auto held = wait_response(*observer, "held", "h-1", 5s);
  ASSERT_TRUE(held) << "the request in flight was not answered before exit";
  EXPECT_EQ(json_string(parse_json(held->payload), "status"), "ok") << held->payload;
  for (int i = 0; i < kQueued; ++i)
    EXPECT_TRUE(
        responses_with_id(*observer, fmt::format("queued{:02}", i), fmt::format("q-{}", i)).empty())
        << "q-" << i << " was served during the drain: the test's premise failed";
  EXPECT_NE(agent.log().find(fmt::format(
                "left {} queued request(s) in the intake spool for the next start", kQueued)),
            std::string::npos)
      << agent.log();

  agent.start();
  for (int i = 0; i < kQueued; ++i) {
    const std::string device = fmt::format("queued{:02}", i);
    auto response = wait_response(*observer, device, fmt::format("q-{}", i));
    ASSERT_TRUE(response) << "q-" << i << " was lost with the drain";
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
    EXPECT_TRUE(file_exists(agent.device_dir(device) + "/sensor_private.pem")) << device;
  }
  EXPECT_GE(recovered_from_spool(agent.log()), kQueued) << agent.log();
  EXPECT_EQ(agent.stop(), 0);
}

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
// A spool whose header names the last sequence number a file can hold (only a forged or damaged
// file gets there): each request is answered storage_failed with nothing changed, and the file
// still reads back whole, its epoch and numbering kept.
TEST(DeliveryStorage, ASpoolOutOfSequenceNumbersAnswersStorageFailedAndStaysReadable) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  const std::string spool = agent.state_dir() + "/intake.spool";
  write_file(spool, encode_spool_header(42, kSpoolSeqLimit), 0600);
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  observer->publish("provision/seq01/request", R"({"request_id":"s-1"})");
  auto response = wait_response(*observer, "seq01", "s-1", 10s);
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(error_code(parse_json(response->payload)), "storage_failed") << response->payload;
  EXPECT_FALSE(file_exists(agent.device_dir("seq01")));
  EXPECT_NE(agent.log().find("used up its sequence numbers"), std::string::npos) << agent.log();
  ASSERT_TRUE(agent.running());
  const std::string bytes = read_file(spool);
  const SpoolImage image = read_spool_image(bytes);
  EXPECT_EQ(image.valid_bytes, bytes.size());
  EXPECT_EQ(image.epoch, 42u);
  EXPECT_EQ(image.next_seq, kSpoolSeqLimit);
  EXPECT_TRUE(image.pending.empty());
  EXPECT_EQ(agent.stop(), 0);
}

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

// ---------------------------------------------------------------------------------------------
// Retries (SPEC 3.4)

struct FileState {
  ino_t inode = 0;
  std::int64_t mtime_ns = 0;
  std::string content;
  bool operator==(const FileState& other) const {
    return inode == other.inode && mtime_ns == other.mtime_ns && content == other.content;
  }
};

FileState file_state(const std::string& path) {
  struct stat info {};
  FileState state;
  if (::stat(path.c_str(), &info) != 0) return state;
  state.inode = info.st_ino;
  state.mtime_ns =
      static_cast<std::int64_t>(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec;
  state.content = read_file(path);
  return state;
}

std::vector<Message> keys_with_id(const MqttClient& observer, const std::string& device,
                                  const std::string& request_id) {
  std::vector<Message> found;
  for (Message& message : observer.messages("keys/" + device + "/public"))
    if (!message.payload.empty() &&
        json_string(parse_json(message.payload), "request_id") == request_id)
      found.push_back(std::move(message));
  return found;
}

TEST(DeliveryRetry, ARetryAfterCompletionIsAnsweredFromTheRecord) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  const std::string dir = agent.device_dir("retry1");
  const std::int64_t now = std::time(nullptr);

  // A generate, then its retry: ts is not part of what makes two requests the same.
  observer->publish("provision/retry1/request",
                    fmt::format(R"({{"request_id":"r-1","ts":{}}})", now));
  auto first = wait_response(*observer, "retry1", "r-1");
  ASSERT_TRUE(first) << agent.log();
  const Answer generated = answer_of(*first);
  ASSERT_EQ(generated.status, "ok") << first->payload;
  ASSERT_TRUE(observer->wait_count("keys/retry1/public", 1, 10s));
  const FileState private_before = file_state(dir + "/sensor_private.pem");
  const FileState public_before = file_state(dir + "/sensor_public.pem");

  observer->publish("provision/retry1/request",
                    fmt::format(R"({{"request_id":"r-1","ts":{}}})", now + 1));
  ASSERT_TRUE(
      wait_until([&] { return responses_with_id(*observer, "retry1", "r-1").size() == 2; }, 30s));
  const Answer retried = answer_of(responses_with_id(*observer, "retry1", "r-1").back());
  EXPECT_EQ(retried.status, "ok");
  EXPECT_TRUE(retried.duplicate) << "a retry carries \"duplicate\": true";
  EXPECT_EQ(retried.fingerprint, generated.fingerprint);
  EXPECT_TRUE(file_state(dir + "/sensor_private.pem") == private_before) << "the key was rewritten";
  EXPECT_TRUE(file_state(dir + "/sensor_public.pem") == public_before);
  // The current key is published again: the first copy may be what the server missed.
  ASSERT_TRUE(
      wait_until([&] { return keys_with_id(*observer, "retry1", "r-1").size() == 2; }, 10s));
  EXPECT_EQ(json_string(parse_json(keys_with_id(*observer, "retry1", "r-1").back().payload),
                        "fingerprint"),
            generated.fingerprint);

  // An update and its retry: one rotation.
  observer->publish("provision/retry1/update", R"({"request_id":"r-2"})");
  auto updated = wait_response(*observer, "retry1", "r-2");
  ASSERT_TRUE(updated);
  const Answer rotated = answer_of(*updated);
  ASSERT_EQ(rotated.status, "ok") << updated->payload;
  ASSERT_NE(rotated.fingerprint, generated.fingerprint);
  observer->publish("provision/retry1/update", R"({"request_id":"r-2"})");
  ASSERT_TRUE(
      wait_until([&] { return responses_with_id(*observer, "retry1", "r-2").size() == 2; }, 30s));
  const Answer update_retried = answer_of(responses_with_id(*observer, "retry1", "r-2").back());
  EXPECT_TRUE(update_retried.duplicate);
  EXPECT_EQ(update_retried.fingerprint, rotated.fingerprint);
  EXPECT_EQ(openssl_fingerprint(dir + "/sensor_public.pem"), rotated.fingerprint);
  EXPECT_EQ(openssl_fingerprint(dir + "/sensor_public.prev.pem"), generated.fingerprint)
      << "the retry rotated again";

  // The same id with other content is a replay, reported on replay_blocked; nothing changes.
  observer->subscribe("provision/status/+/replay_blocked");
  observer->publish("provision/retry1/request", R"({"request_id":"r-1","force":true})");
  ASSERT_TRUE(
      wait_until([&] { return responses_with_id(*observer, "retry1", "r-1").size() == 3; }, 30s));
  const Answer replayed = answer_of(responses_with_id(*observer, "retry1", "r-1").back());
  EXPECT_EQ(replayed.code, "replay");
  EXPECT_FALSE(replayed.duplicate);
  auto blocked = observer->wait_for("provision/status/retry1/replay_blocked", 10s);
  ASSERT_TRUE(blocked);
  auto blocked_json = parse_json(blocked->payload);
  EXPECT_EQ(json_string(blocked_json, "device_id"), "retry1") << blocked->payload;
  EXPECT_EQ(json_string(blocked_json, "request_id"), "r-1") << blocked->payload;
  EXPECT_EQ(json_string(blocked_json, "reason"), "id_reused") << blocked->payload;
  EXPECT_EQ(openssl_fingerprint(dir + "/sensor_public.pem"), rotated.fingerprint);

  // A delete and its retry: answered ok again, not not_found.
  observer->publish("provision/retry1/delete", R"({"request_id":"r-3"})");
  ASSERT_TRUE(wait_response(*observer, "retry1", "r-3"));
  observer->publish("provision/retry1/delete", R"({"request_id":"r-3"})");
  ASSERT_TRUE(
      wait_until([&] { return responses_with_id(*observer, "retry1", "r-3").size() == 2; }, 30s));
  for (const Message& message : responses_with_id(*observer, "retry1", "r-3"))
    EXPECT_EQ(answer_of(message).status, "ok") << message.payload;
  EXPECT_TRUE(answer_of(responses_with_id(*observer, "retry1", "r-3").back()).duplicate);
  EXPECT_FALSE(file_exists(dir + "/sensor_private.pem"));
  EXPECT_EQ(agent.stop(), 0);
}

// SPEC 3.4: a retry that arrives while the request is still queued gets no answer of its own:
// exactly one response in all.
TEST(DeliveryRetry, ARetryOfARequestStillQueuedIsAnsweredOnce) {
  PluginFolder plugins;
  plugins.add_hold_action();
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins.path()}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  observer->publish("provision/queued1/request", R"({"action":"hold","request_id":"q-hold"})");
  ASSERT_TRUE(plugins.wait_started("queued1")) << agent.log();
  observer->publish("provision/queued1/request", R"({"request_id":"q-x"})");
  observer->publish("provision/queued1/request", R"({"request_id":"q-x"})");
  // Served after both copies (one device's requests run in arrival order): its answer means
  // every answer to q-x is out.
  observer->publish("provision/queued1/request",
                    R"({"action":"publish_key","request_id":"q-marker"})");
  // Released once the agent holds all three behind the held action (its spool says so).
  ASSERT_TRUE(wait_until([&] { return spooled_requests(agent) == 4; }, 10s)) << agent.log();
  plugins.release("queued1");
  auto marker = wait_response(*observer, "queued1", "q-marker");
  ASSERT_TRUE(marker) << agent.log();
  EXPECT_EQ(json_string(parse_json(marker->payload), "status"), "ok") << marker->payload;

  const auto answers = responses_with_id(*observer, "queued1", "q-x");
  ASSERT_EQ(answers.size(), 1u) << "a retry of a queued request was answered on its own";
  const Answer answer = answer_of(answers.front());
  EXPECT_EQ(answer.status, "ok");
  EXPECT_FALSE(answer.duplicate);
  EXPECT_EQ(keys_with_id(*observer, "queued1", "q-x").size(), 1u);
  EXPECT_EQ(openssl_fingerprint(agent.device_dir("queued1") + "/sensor_public.pem"),
            answer.fingerprint);
  EXPECT_EQ(agent.stop(), 0);
}

// ---------------------------------------------------------------------------------------------
// MQTT 5 Message Expiry (SPEC 3.4)

std::string v5_publish(int port, const std::string& topic, const std::string& payload,
                       int expiry_seconds) {
  return fmt::format(
      "mosquitto_pub -V 5 -h 127.0.0.1 -p {} -q 1 -t {} -m {} -D publish message-expiry-interval "
      "{}",
      port, shell_quote(topic), shell_quote(payload), expiry_seconds);
}

TEST(DeliveryExpiry, ARequestWhoseExpiryPassesWhileQueuedIsAnsweredExpiredAndNotRun) {
  PluginFolder plugins;
  plugins.add_hold_action();
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins.path()}, {"MQTT_PROTOCOL", "5"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  observer->publish("provision/expiring/request", R"({"action":"hold","request_id":"x-hold"})");
  ASSERT_TRUE(plugins.wait_started("expiring")) << agent.log();
  const auto sent = run_command(
      v5_publish(broker.port(), "provision/expiring/request", R"({"request_id":"x-1"})", 1));
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  ASSERT_TRUE(wait_until([&] { return spooled_requests(agent) == 2; }, 10s)) << agent.log();
  // Its one second passes while the device's queue is held.
  std::this_thread::sleep_for(1500ms);
  plugins.release("expiring");
  auto response = wait_response(*observer, "expiring", "x-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(error_code(parse_json(response->payload)), "expired") << response->payload;
  EXPECT_FALSE(file_exists(agent.device_dir("expiring"))) << "the expired request was run";
  EXPECT_TRUE(keys_with_id(*observer, "expiring", "x-1").empty());
  EXPECT_EQ(agent.stop(), 0);
}

// The expiry travels with the request in the spool: a request that expired while the agent was
// down is answered expired by the next start, not run.
TEST(DeliveryExpiry, ARequestThatExpiredInTheSpoolIsAnsweredExpiredAfterARestart) {
  PluginFolder plugins;
  plugins.add_hold_action();
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_PLUGIN_DIR", plugins.path()}, {"MQTT_PROTOCOL", "5"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  observer->publish("provision/spooled/request", R"({"action":"hold","request_id":"s-hold"})");
  ASSERT_TRUE(plugins.wait_started("spooled")) << agent.log();
  const auto sent = run_command(
      v5_publish(broker.port(), "provision/spooled/request", R"({"request_id":"s-1"})", 1));
  ASSERT_EQ(sent.exit_code, 0) << sent.output;
  // The agent takes messages in order: once a later one is answered, s-1 is in the spool.
  observer->publish("provision/other/request", R"({"request_id":"o-1"})");
  ASSERT_TRUE(wait_response(*observer, "other", "o-1")) << agent.log();
  agent.kill();
  std::this_thread::sleep_for(1500ms);
  plugins.release("spooled");  // the held action, served again from the spool, ends at once

  agent.start();
  auto response = wait_response(*observer, "spooled", "s-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(error_code(parse_json(response->payload)), "expired") << response->payload;
  EXPECT_FALSE(file_exists(agent.device_dir("spooled"))) << "the expired request was run";
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace pa::test
