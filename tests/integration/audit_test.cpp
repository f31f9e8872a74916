// The audit log (SPEC sections 5 and 7) as an operator and a server see it: key requests served by
// the real agent through a real mosquitto leave hash-chained entries that an independent Python
// verifier (hashlib, not our code) accepts; `provision-agent audit verify` names the first entry
// that was changed, removed, reordered or truncated away (also past a checkpoint); a kill -9 in the
// middle of a burst leaves a log that verifies; and the retained checkpoint is signed by the agent
// key, checked with PyCryptodome.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

namespace fs = std::filesystem;

// Debian's interpreter: the one python3-pycryptodome installs Cryptodome for.
constexpr const char* kPython = "/usr/bin/python3";

// An independent verifier of SPEC section 5's chain, from its words alone: the files oldest
// first, each line's SHA-256 over its bytes without the hash member, seq +1, prev = hash before,
// the first entry seq 1 with prev 64 zeros. Prints "<entries> <last seq> <last hash>", and the
// hash of the seq given as second argument when there is one.
constexpr const char* kChainVerifier = R"PY(
import hashlib, json, os, sys
state, at = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None
names = ["audit.log.%d" % g for g in range(4, 0, -1)] + ["audit.log"]
seq, prev, count, hash_at = 0, "0" * 64, 0, None
for name in names:
    path = os.path.join(state, name)
    if not os.path.exists(path):
        continue
    data = open(path, "rb").read()
    assert data.endswith(b"\n"), name + " ends in a torn line"
    for line in data.split(b"\n")[:-1]:
        entry = json.loads(line.decode("utf-8"))
        body = line[:line.rindex(b',"hash":"')] + b"}"
        assert hashlib.sha256(body).hexdigest() == entry["hash"], "hash of seq %d" % entry["seq"]
        assert entry["seq"] == seq + 1, "seq %d follows %d" % (entry["seq"], seq)
        assert entry["prev"] == prev, "prev of seq %d" % entry["seq"]
        seq, prev, count = entry["seq"], entry["hash"], count + 1
        if seq == at:
            hash_at = prev
print(count, seq, prev, hash_at or "")
)PY";

// A checkpoint checked as a server would, with PyCryptodome: RS256 over the JWS signing input
// by the agent's public key (from its retained status), the header's alg and kid, and a payload
// that is exactly {"seq","hash"} of the checkpoint. Prints the kid.
constexpr const char* kCheckpointVerifier = R"PY(
import base64, json, sys
from Cryptodome.Hash import SHA256
from Cryptodome.PublicKey import RSA
from Cryptodome.Signature import pkcs1_15
checkpoint = json.load(open(sys.argv[1]))
key = RSA.import_key(open(sys.argv[2]).read())
header, payload, signature = checkpoint["signature"].split(".")
def decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
pkcs1_15.new(key).verify(SHA256.new((header + "." + payload).encode()), decode(signature))
assert "=" not in checkpoint["signature"]
head = json.loads(decode(header))
assert head["alg"] == "RS256", head
assert json.loads(decode(payload)) == {"seq": checkpoint["seq"], "hash": checkpoint["hash"]}
print(head["kid"])
)PY";

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) out += line + "\n";
  return out;
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    observer = make_observer(broker.port());
    observer->subscribe("provision/agents/+/audit");
    agent = std::make_unique<Agent>(broker.port());
    agent->start();
    ASSERT_TRUE(wait_online(*observer, *agent));
  }

  std::string state() const { return agent->root() + "/state"; }
  std::string audit_log() const { return state() + "/audit.log"; }

  // Publishes a request and waits for its response.
  rapidjson::Document request(const std::string& device, const std::string& payload_fields,
                              const std::string& request_id, const std::string& leaf = "request") {
    observer->publish(
        "provision/" + device + "/" + leaf,
        fmt::format(R"({{"request_id":{}{}}})", json_quote(request_id), payload_fields));
    const auto response = wait_response(*observer, device, request_id);
    EXPECT_TRUE(response) << "no response to " << request_id;
    return parse_json(response ? response->payload : "null");
  }

  // The independent Python verifier over a state folder: (exit status, output).
  CommandResult python_chain(const std::string& folder, std::uint64_t at = 0) {
    const std::string script = scripts.file("chain.py");
    write_file(script, kChainVerifier);
    return run_command(fmt::format("{} {} {} {} 2>&1", kPython, shell_quote(script),
                                   shell_quote(folder), at ? std::to_string(at) : ""));
  }

  // `provision-agent audit verify` on the audit log in `folder`.
  CommandResult audit_verify(const std::string& folder, const std::string& arguments = {}) {
    std::string command = "env -i PATH=/usr/bin:/bin";
    command += " " + shell_quote("STATE_DIRECTORY=" + folder);
    command += " " + shell_quote("PROVISION_KEYS_DIR=" + agent->keys_dir());
    return run_command(command + " " + agent_shell_command() + " audit verify " + arguments +
                       " 2>&1");
  }

  // A folder holding only `audit_log_text` as audit.log, to tamper with.
  std::string copy_with(const std::string& audit_log_text) {
    copies.emplace_back();
    const std::string folder = copies.back().file("state");
    ::mkdir(folder.c_str(), 0700);
    write_file(folder + "/audit.log", audit_log_text, 0600);
    return folder;
  }

  // The agent's public key as a server pins it: from its retained status message.
  std::string agent_public_key_file() {
    const auto status = observer->wait_for(
        agent->status_topic(), kOnlineTimeout,
        [](const Message& message) { return json_has(parse_json(message.payload), "public_key"); });
    EXPECT_TRUE(status);
    const auto json = parse_json(status ? status->payload : "{}");
    const std::string path = scripts.file("agent_public.pem");
    write_file(path, json_string(json, "public_key"));
    return path;
  }

  // Waits (bounded) until audit.log holds at least `count` complete lines.
  bool wait_entries(std::size_t count, std::chrono::seconds timeout = 60s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (file_exists(audit_log()) && lines_of(read_file(audit_log())).size() >= count) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  Broker broker;
  std::unique_ptr<MqttClient> observer;
  std::unique_ptr<Agent> agent;
  TempDir scripts;
  std::vector<TempDir> copies;
};

TEST_F(AuditTest, KeyRequestsLeaveChainedEntriesThatAnIndependentVerifierAccepts) {
  auto generated = request("pH01", R"(,"user_id":"alice")", "gen-1");
  ASSERT_EQ(json_string(generated, "status"), "ok");
  const std::string first = json_string(generated, "fingerprint");
  ASSERT_EQ(json_string(request("pH01", R"(,"user_id":"alice","action":"publish_key")", "pub-1"),
                        "status"),
            "ok");
  auto updated = request("pH01", R"(,"user_id":"alice")", "upd-1", "update");
  ASSERT_EQ(json_string(updated, "status"), "ok");
  const std::string second = json_string(updated, "fingerprint");
  ASSERT_EQ(json_string(request("pH01", R"(,"user_id":"alice")", "del-1", "delete"), "status"),
            "ok");
  ASSERT_EQ(error_code(request("pH02", R"(,"action":"publish_key")", "pub-2")), "not_found");

  const auto lines = lines_of(read_file(audit_log()));
  ASSERT_EQ(lines.size(), 7u) << read_file(audit_log());
  EXPECT_EQ(file_mode(audit_log()), 0600);
  struct Expected {
    const char* action;
    const char* request_id;
    std::string fingerprint;
    std::string previous;
    const char* outcome;
  };
  const std::vector<Expected> expected = {
      {"generate", "gen-1", first, "", "ok"}, {"publish", "gen-1", first, "", "ok"},
      {"publish", "pub-1", first, "", "ok"},  {"update", "upd-1", second, first, "ok"},
      {"publish", "upd-1", second, "", "ok"}, {"delete", "del-1", "", second, "ok"},
      {"publish", "pub-2", "", "", "error"},
  };
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const auto entry = parse_json(lines[i]);
    ASSERT_FALSE(entry.HasParseError()) << lines[i];
    EXPECT_EQ(json_string(entry, "action"), expected[i].action) << lines[i];
    EXPECT_EQ(json_string(entry, "request_id"), expected[i].request_id) << lines[i];
    EXPECT_EQ(json_string(entry, "fingerprint"), expected[i].fingerprint) << lines[i];
    EXPECT_EQ(json_string(entry, "previous_fingerprint"), expected[i].previous) << lines[i];
    EXPECT_EQ(json_string(entry, "outcome"), expected[i].outcome) << lines[i];
    EXPECT_EQ(json_string(entry, "device_id"), i < 6 ? "pH01" : "pH02") << lines[i];
    EXPECT_EQ(json_string(entry, "user_id"), i < 6 ? "alice" : "") << lines[i];
    if (i == 6) {
      EXPECT_TRUE(entry["user_id"].IsNull()) << "absent values are null";
      EXPECT_TRUE(entry["fingerprint"].IsNull());
    }
  }

  const CommandResult python = python_chain(state());
  ASSERT_EQ(python.exit_code, 0) << python.output;
  const std::string last_hash = json_string(parse_json(lines.back()), "hash");
  EXPECT_EQ(python.output, fmt::format("7 7 {} \n", last_hash));

  const CommandResult verified = audit_verify(state());
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  EXPECT_NE(
      verified.output.find("OK   7 entries, seq 1 to 7, chained and intact; head " + last_hash),
      std::string::npos)
      << verified.output;
  EXPECT_EQ(agent->stop(), 0);
}

TEST_F(AuditTest, APublicKeyRewrittenFromThePrivateKeyIsRecordedAsARepair) {
  auto generated = request("pH01", "", "gen");
  ASSERT_EQ(json_string(generated, "status"), "ok");
  ASSERT_EQ(::unlink((agent->device_dir("pH01") + "/sensor_public.pem").c_str()), 0);
  ASSERT_EQ(json_string(request("pH01", R"(,"action":"publish_key")", "pub"), "status"), "ok");
  EXPECT_TRUE(file_exists(agent->device_dir("pH01") + "/sensor_public.pem"));

  const auto lines = lines_of(read_file(audit_log()));
  ASSERT_EQ(lines.size(), 4u) << read_file(audit_log());
  const auto repair = parse_json(lines[2]);
  EXPECT_EQ(json_string(repair, "action"), "repair");
  EXPECT_EQ(json_string(repair, "request_id"), "pub");
  EXPECT_EQ(json_string(repair, "fingerprint"), json_string(generated, "fingerprint"));
  EXPECT_EQ(json_string(repair, "outcome"), "ok");
  EXPECT_EQ(json_string(parse_json(lines[3]), "action"), "publish");
  EXPECT_EQ(python_chain(state()).exit_code, 0);
}

// A log of 12 entries to tamper with, and what `audit verify` says about each change.
TEST_F(AuditTest, VerifyNamesTheFirstEntryChangedRemovedReorderedOrTruncated) {
  for (int i = 1; i <= 6; ++i) {
    const std::string device = fmt::format("dev{:02}", i);
    ASSERT_EQ(json_string(request(device, "", "gen-" + device), "status"), "ok");
  }
  EXPECT_EQ(agent->stop(), 0);
  const std::string original = read_file(audit_log());
  const auto lines = lines_of(original);
  ASSERT_EQ(lines.size(), 12u);
  ASSERT_EQ(audit_verify(copy_with(original)).exit_code, 0);

  auto expect_fail = [&](const std::string& text, const std::string& expected) {
    const CommandResult result = audit_verify(copy_with(text));
    EXPECT_EQ(result.exit_code, 1) << result.output;
    EXPECT_NE(result.output.find(expected), std::string::npos)
        << "expected \"" << expected << "\" in:\n"
        << result.output;
    // The independent verifier agrees that something is wrong.
    EXPECT_NE(python_chain(copies.back().file("state")).exit_code, 0) << expected;
  };

  // One flipped bit in the device id of seq 5.
  std::string flipped = original;
  const std::size_t at = flipped.find("\"dev03\"");
  ASSERT_NE(at, std::string::npos);
  flipped[at + 4] ^= 0x01;
  ASSERT_NE(flipped[at + 4], '\n');
  expect_fail(flipped, "FAIL seq 5 (audit.log line 5): changed");

  auto removed = lines;
  removed.erase(removed.begin() + 4);
  expect_fail(join(removed), "FAIL seq 5 (audit.log line 5): removed");

  auto swapped = lines;
  std::swap(swapped[4], swapped[5]);
  expect_fail(join(swapped), "FAIL seq 5 (audit.log line 5): reordered");

  // Cut in the middle of seq 9: a torn last line that no start has sealed.
  expect_fail(original.substr(0, join({lines.begin(), lines.begin() + 8}).size() + 30),
              "FAIL seq 9 (audit.log line 9): torn");
}

TEST_F(AuditTest, TheRetainedCheckpointIsSignedByTheAgentKeyAndCatchesTruncation) {
  // 2 entries for the generation, then 98 publications: the 100th entry makes a checkpoint.
  ASSERT_EQ(json_string(request("pH01", "", "gen"), "status"), "ok");
  for (int i = 0; i < 98; ++i)
    observer->publish("provision/pH01/request",
                      fmt::format(R"({{"request_id":"pub-{}","action":"publish_key"}})", i));
  const std::string audit_topic = "provision/agents/" + agent->client_id() + "/audit";
  auto seq_of = [](const Message& message) -> std::uint64_t {
    const auto json = parse_json(message.payload);
    return json.IsObject() && json.HasMember("seq") && json["seq"].IsUint64()
               ? json["seq"].GetUint64()
               : 0;
  };
  const auto checkpoint = observer->wait_for(audit_topic, kResponseTimeout,
                                             [&](const Message& m) { return seq_of(m) == 100; });
  ASSERT_TRUE(checkpoint) << "no checkpoint at seq 100";
  EXPECT_TRUE(observer->wait_count("provision/pH01/response", 99, kResponseTimeout));

  // Retained: a server that subscribes later still gets it.
  MqttClient late(broker.port());
  late.subscribe(audit_topic);
  const auto retained = late.wait_for(audit_topic, 10s);
  ASSERT_TRUE(retained);
  EXPECT_TRUE(retained->retain);
  EXPECT_EQ(seq_of(*retained), 100u);
  EXPECT_EQ(agent->stop(), 0);

  // PyCryptodome checks the signature against the agent's published public key; the kid is its
  // fingerprint; the hash is the log's at seq 100 as the independent verifier computes it.
  const std::string checkpoint_file = scripts.file("checkpoint.json");
  write_file(checkpoint_file, checkpoint->payload);
  const std::string public_key = agent_public_key_file();
  const std::string script = scripts.file("checkpoint.py");
  write_file(script, kCheckpointVerifier);
  const CommandResult signature =
      run_command(fmt::format("{} {} {} {} 2>&1", kPython, shell_quote(script),
                              shell_quote(checkpoint_file), shell_quote(public_key)));
  ASSERT_EQ(signature.exit_code, 0) << signature.output;
  EXPECT_EQ(signature.output, openssl_fingerprint(public_key) + "\n");
  const CommandResult chain = python_chain(state(), 100);
  ASSERT_EQ(chain.exit_code, 0) << chain.output;
  const std::string hash_at_100 = json_string(parse_json(checkpoint->payload), "hash");
  EXPECT_EQ(chain.output.substr(chain.output.size() - 65), hash_at_100 + "\n") << chain.output;

  // `audit verify --checkpoint` with the agent key of the state folder, and with the pinned key.
  CommandResult verified = audit_verify(state(), "--checkpoint " + shell_quote(checkpoint_file));
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  EXPECT_NE(verified.output.find("OK   checkpoint seq 100 matches the log"), std::string::npos)
      << verified.output;

  // Entries cut from the end: invisible to the chain alone, named against the checkpoint.
  const auto lines = lines_of(read_file(audit_log()));
  ASSERT_GE(lines.size(), 100u);
  const std::string truncated = copy_with(join({lines.begin(), lines.begin() + 60}));
  EXPECT_EQ(audit_verify(truncated).exit_code, 0);
  verified = audit_verify(truncated, "--checkpoint " + shell_quote(checkpoint_file) +
                                         " --public-key " + shell_quote(public_key));
  EXPECT_EQ(verified.exit_code, 1) << verified.output;
  EXPECT_NE(verified.output.find("FAIL seq 61 (after the end of audit.log): truncated"),
            std::string::npos)
      << verified.output;

  // A checkpoint whose seq was changed no longer verifies.
  std::string forged = checkpoint->payload;
  forged.replace(forged.find("\"seq\":100"), 9, "\"seq\":60");
  write_file(checkpoint_file, forged);
  verified = audit_verify(truncated, "--checkpoint " + shell_quote(checkpoint_file) +
                                         " --public-key " + shell_quote(public_key));
  EXPECT_EQ(verified.exit_code, 1) << verified.output;
  EXPECT_NE(verified.output.find("its signature does not verify"), std::string::npos)
      << verified.output;
}

TEST_F(AuditTest, AKillDuringABurstLeavesALogThatVerifiesAndATornTailIsSealed) {
  ASSERT_EQ(json_string(request("pH01", "", "gen"), "status"), "ok");
  constexpr int kBurst = 150;
  for (int i = 0; i < kBurst; ++i)
    observer->publish("provision/pH01/request",
                      fmt::format(R"({{"request_id":"pub-{}","action":"publish_key"}})", i));
  ASSERT_TRUE(wait_entries(20)) << "the burst never reached the audit log";
  agent->kill();

  // Whatever kill -9 interrupted, the complete entries verify.
  CommandResult verified = audit_verify(state());
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  ASSERT_EQ(python_chain(state()).exit_code, 0);
  const std::size_t before = lines_of(read_file(audit_log())).size();

  // A kill cannot cut one write(2) short, a power loss can: the tail it would leave.
  const std::string torn = R"({"seq":)" + std::to_string(before + 1) + R"(,"ts":"2026-)";
  {
    const std::string text = read_file(audit_log());
    write_file(audit_log(), text + torn, 0600);
  }
  verified = audit_verify(state());
  EXPECT_EQ(verified.exit_code, 1) << verified.output;
  EXPECT_NE(verified.output.find(
                fmt::format("FAIL seq {} (audit.log line {}): torn", before + 1, before + 1)),
            std::string::npos)
      << verified.output;

  // The next start seals it and serves what the kill left in the spool or the broker kept.
  agent->start();
  for (int i = 0; i < kBurst; ++i)
    ASSERT_TRUE(wait_response(*observer, "pH01", fmt::format("pub-{}", i)))
        << "pub-" << i << " was never answered";
  EXPECT_EQ(agent->stop(), 0);
  EXPECT_NE(agent->log().find("torn entry"), std::string::npos) << "the tear was not reported";

  const auto lines = lines_of(read_file(audit_log()));
  const auto seal = parse_json(lines.at(before));
  EXPECT_EQ(json_string(seal, "action"), "seal");
  EXPECT_EQ(seal["seq"].GetUint64(), before + 1);
  EXPECT_EQ(seal["cut_bytes"].GetUint64(), torn.size());
  const CommandResult python = python_chain(state());
  EXPECT_EQ(python.exit_code, 0) << python.output;
  verified = audit_verify(state());
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  EXPECT_NE(verified.output.find(fmt::format("NOTE seq {} (audit.log line {}) seals a torn entry: "
                                             "{} bytes",
                                             before + 1, before + 1, torn.size())),
            std::string::npos)
      << verified.output;
  // Every request of the burst is there (at least once: SPEC 3.4 may redo one cut short).
  std::set<std::string> published;
  for (const auto& line : lines) {
    const auto entry = parse_json(line);
    if (json_string(entry, "action") == "publish")
      published.insert(json_string(entry, "request_id"));
  }
  for (int i = 0; i < kBurst; ++i)
    EXPECT_EQ(published.count(fmt::format("pub-{}", i)), 1u) << "pub-" << i << " not recorded";
}

}  // namespace
}  // namespace pa::test
