// Trusting the published key (SPEC sections 3.2 and 5) as a server and an operator see it, with the
// real agent and a real mosquitto: every key message's attestation verifies with PyCryptodome
// against the agent key from its retained status, and any alteration of the message fails; the
// certificate request that PROVISION_CSR adds is accepted by `openssl req -verify` with the right
// subject and key, for every key type; certificates made here with `openssl` are installed only
// when they certify the device's current key, are within their dates and chain to
// PROVISION_CA_FILE, and follow the keys through `update` and `delete`; keys older than
// PROVISION_KEY_MAX_AGE and certificates past 80% of their lifetime are reported on
// P/status/D/rotation_due, at start and after the clock jumps (libfaketime on the agent), once a
// day; and the original server, which reads only `public_key`, still gets its PEM.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "agent_harness.hpp"
#include "test_pki.hpp"

namespace pa::test {
namespace {

// Debian's interpreter: the one python3-pycryptodome installs Cryptodome for.
constexpr const char* kPython = "/usr/bin/python3";

constexpr const char* kKeyTypes[] = {"rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ed25519"};

constexpr std::int64_t kDay = 86400;

// What a server needs to trust a key message (SPEC 3.2), written as a server author would copy it
// (the README quotes it): the pinned agent key signed the attestation, the attested fields are the
// message's, and the public key is the one whose fingerprint was attested.
constexpr const char* kServerVerifier = R"PY(
import base64, json
from Cryptodome.Hash import SHA256
from Cryptodome.PublicKey import RSA
from Cryptodome.Signature import pkcs1_15

ATTESTED = ("device_id", "user_id", "key_type", "fingerprint", "created_at", "request_id", "agent_id")

def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

def fingerprint(pem):  # "SHA256:" + unpadded base64 of the SHA-256 of the key's DER
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    return "SHA256:" + base64.b64encode(SHA256.new(der).digest()).decode().rstrip("=")

def verify_key_message(message, agent_public_pem):
    """The message's public key when the pinned agent key attests it; ValueError otherwise."""
    header, payload, signature = message["attestation"].split(".")
    pkcs1_15.new(RSA.import_key(agent_public_pem)).verify(
        SHA256.new((header + "." + payload).encode()), b64url(signature))
    claims = json.loads(b64url(payload))
    if any(claims.get(name) != message.get(name) for name in ATTESTED):
        raise ValueError("the key message differs from what the agent attested")
    if fingerprint(message["public_key"]) != message["fingerprint"]:
        raise ValueError("the public key is not the one the agent attested")
    return message["public_key"]
)PY";

// The test around it: the message verifies, its header and payload are what SPEC 3.2 says, and
// every alteration (each attested field changed, added or removed in turn, another device's key or
// attestation, a character of the signature, a payload swapped under the signature, no
// attestation) is refused. Arguments: the message, another device's message, the agent's public
// key. Prints how many alterations were refused.
constexpr const char* kAttestationCheck = R"PY(
import sys
message, other = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
agent_public_pem = open(sys.argv[3]).read()
assert verify_key_message(message, agent_public_pem) == message["public_key"]
header, payload, signature = message["attestation"].split(".")
assert json.loads(b64url(header)) == {"alg": "RS256", "kid": fingerprint(agent_public_pem)}, header
assert json.loads(b64url(payload)) == {n: message[n] for n in ATTESTED if n in message}, payload

def refused(altered):
    try:
        verify_key_message(altered, agent_public_pem)
    except (ValueError, KeyError):
        return True
    return False

def changed(text):
    return text[:-1] + ("0" if text[-1] != "0" else "1")

def without(name):
    return {key: value for key, value in message.items() if key != name}

alterations = {}
for name in ATTESTED:
    alterations["changed " + name] = dict(message, **{name: changed(message.get(name, "added"))})
    if name in message:
        alterations["removed " + name] = without(name)
alterations["another device's public key"] = dict(message, public_key=other["public_key"])
alterations["another device's attestation"] = dict(message, attestation=other["attestation"])
flipped = signature[:100] + ("A" if signature[100] != "A" else "B") + signature[101:]
alterations["a character of the signature"] = dict(
    message, attestation=".".join((header, payload, flipped)))
claims = dict(json.loads(b64url(payload)), fingerprint=other["fingerprint"])
swapped = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
alterations["another key's claims under this signature"] = dict(
    message, fingerprint=other["fingerprint"], public_key=other["public_key"],
    attestation=".".join((header, swapped, signature)))
alterations["no attestation"] = without("attestation")
accepted = [what for what, altered in alterations.items() if not refused(altered)]
assert not accepted, "accepted after: " + ", ".join(accepted)
print(len(alterations), "alterations refused")
)PY";

// The original server (seeds/python-provision-agent-guide.md) reads the key message's
// `public_key` and nothing else. Arguments: the payload as received, sensor_public.pem.
constexpr const char* kOriginalServer = R"PY(
import json, sys
from Cryptodome.PublicKey import RSA
payload = open(sys.argv[1], "rb").read()
assert json.loads(payload)["public_key"] == open(sys.argv[2]).read()
print(RSA.import_key(json.loads(payload)["public_key"]).size_in_bits())
)PY";

// A report's integer member (-1 when missing or not an integer).
std::int64_t int_field(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return -1;
  const auto member = object.FindMember(name);
  return member != object.MemberEnd() && member->value.IsInt64() ? member->value.GetInt64() : -1;
}

// libfaketime from Debian's faketime package, built for the agent's architecture.
std::string libfaketime() {
  return PA_LIBFAKETIME;
}

// Whether libfaketime is where the agent's loader looks. Under an emulator it may live in the
// emulator's root (scripts/cross.sh's sysroot) instead, which only the agent sees.
bool libfaketime_installed() {
  return *PA_AGENT_EMULATOR != '\0' || file_exists(libfaketime());
}

// An agent environment whose wall clock is libfaketime's `spec` (e.g. "+2d"), or the spec read
// from `spec_file` when that is given (rewriting it moves the running agent's clock within a
// second). The monotonic clock stays real, as it does when a real clock is set, and file times are
// the kernel's: a key's age is the fake now minus the real moment it was written.
std::map<std::string, std::string> fake_clock(const std::string& spec,
                                              const std::string& spec_file = {}) {
  std::map<std::string, std::string> env = {
      {"LD_PRELOAD", libfaketime()},
      {"FAKETIME_DONT_FAKE_MONOTONIC", "1"},
      {"NO_FAKE_STAT", "1"},
      {"FAKETIME_CACHE_DURATION", "1"},
  };
  if (spec_file.empty()) {
    env["FAKETIME"] = spec;
  } else {
    write_file(spec_file, spec + "\n");
    env["FAKETIME_TIMESTAMP_FILE"] = spec_file;
  }
  return env;
}

class TrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    observer = make_observer(broker.port());
    observer->subscribe("provision/status/+/rotation_due");
  }

  // Starts the agent with `env` (beside the harness's defaults) and waits until it is online.
  void start_agent(std::map<std::string, std::string> env = {}) {
    agent = std::make_unique<Agent>(broker.port(), std::move(env));
    agent->start();
    ASSERT_TRUE(wait_online(*observer, *agent));
  }

  // Publishes a request with `fields` (JSON members after request_id) and waits for its response.
  rapidjson::Document request(const std::string& device, const std::string& request_id,
                              const std::string& fields = {}, const std::string& leaf = "request") {
    observer->publish("provision/" + device + "/" + leaf,
                      fmt::format(R"({{"request_id":{}{}}})", json_quote(request_id), fields));
    const auto response = wait_response(*observer, device, request_id);
    EXPECT_TRUE(response) << "no response to " << request_id;
    return parse_json(response ? response->payload : "null");
  }

  // Generates a key for `device` (of `key_type`, for `user` when given) and returns the key
  // message as published.
  Message generate(const std::string& device, const std::string& user,
                   const std::string& key_type = "ec-p256") {
    const std::string id = unique_name("gen-");
    std::string fields = ",\"key_type\":" + json_quote(key_type);
    if (!user.empty()) fields += ",\"user_id\":" + json_quote(user);
    const auto response = request(device, id, fields);
    EXPECT_EQ(json_string(response, "status"), "ok") << key_type;
    const auto key = wait_key(*observer, device, id);
    EXPECT_TRUE(key) << "no key message for " << device;
    return key.value_or(Message{});
  }

  // install_certificate for `device` with the PEM in `certificate_file`.
  rapidjson::Document install(const std::string& device, const std::string& user,
                              const std::string& certificate_file) {
    return request(device, unique_name("cert-"),
                   fmt::format(R"(,"action":"install_certificate","user_id":{},"certificate":{})",
                               json_quote(user), json_quote(read_file(certificate_file))));
  }

  // The agent's public key as a server pins it: from its retained status message, in a file.
  std::string agent_public_key_file() {
    const auto status = observer->wait_for(
        agent->status_topic(), kOnlineTimeout,
        [](const Message& message) { return json_has(parse_json(message.payload), "public_key"); });
    EXPECT_TRUE(status) << "no status with public_key";
    const std::string path = work.file("agent_public.pem");
    write_file(path, json_string(parse_json(status ? status->payload : "{}"), "public_key"));
    return path;
  }

  // Runs a Python script with arguments: (exit status, output).
  CommandResult python(const std::string& script, const std::vector<std::string>& arguments) {
    const std::string path = work.file(unique_name("script-") + ".py");
    write_file(path, script);
    std::string command = std::string(kPython) + " " + shell_quote(path);
    for (const auto& argument : arguments) command += " " + shell_quote(argument);
    return run_command(command + " 2>&1");
  }

  // A message's payload, or one of its string fields, written to a file of its own.
  std::string save(const std::string& name, const std::string& content) {
    const std::string path = work.file(name);
    write_file(path, content);
    return path;
  }

  // Waits for a rotation_due report for `device`.
  std::optional<Message> wait_due(const std::string& device,
                                  std::chrono::milliseconds timeout = 60s) {
    return observer->wait_for("provision/status/" + device + "/rotation_due", timeout);
  }

  Broker broker;
  std::unique_ptr<MqttClient> observer;
  std::unique_ptr<Agent> agent;
  TempDir work;
};

// ---- attestation (SPEC 3.2) ----

TEST_F(TrustTest, AttestationVerifiesWithPyCryptodomeForEveryKeyTypeAndAnyAlterationFails) {
  start_agent({{"PROVISION_CSR", "true"}});
  const std::string agent_key = agent_public_key_file();
  std::vector<std::string> messages;
  int index = 0;
  for (const char* key_type : kKeyTypes) {
    const std::string user = index % 2 == 0 ? "alice" : "";
    const Message key = generate(unique_name("att-"), user, key_type);
    const auto json = parse_json(key.payload);
    ASSERT_TRUE(json_has(json, "attestation")) << key.payload;
    EXPECT_EQ(json_string(json, "key_type"), key_type);
    messages.push_back(save(fmt::format("message-{}.json", index++), key.payload));
  }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto result = python(std::string(kServerVerifier) + kAttestationCheck,
                               {messages[i], messages[(i + 1) % messages.size()], agent_key});
    EXPECT_EQ(result.exit_code, 0) << kKeyTypes[i] << ": " << result.output;
    // The 7 attested fields changed, those present removed (user_id is absent from every other
    // message), and the 5 other alterations.
    const int removed = i % 2 == 0 ? 7 : 6;
    EXPECT_EQ(result.output, fmt::format("{} alterations refused\n", 7 + removed + 5));
  }
}

TEST_F(TrustTest, EveryKeyMessageIsAttestedPublishUpdateAndRepeat) {
  start_agent();
  const std::string agent_key = agent_public_key_file();
  const std::string device = unique_name("every-");
  const Message generated = generate(device, "bob", "rsa-2048");
  std::vector<std::pair<std::string, std::string>> asks = {
      {R"(,"user_id":"bob","action":"publish_key")", "request"},
      {R"(,"user_id":"bob")", "update"},
      {R"(,"user_id":"bob")", "request"},  // has keys: publishes the existing key
  };
  std::vector<std::string> files = {save("generated.json", generated.payload)};
  for (const auto& [fields, leaf] : asks) {
    const std::string id = unique_name("again-");
    ASSERT_EQ(json_string(request(device, id, fields, leaf), "status"), "ok") << leaf << fields;
    const auto key = wait_key(*observer, device, id);
    ASSERT_TRUE(key);
    EXPECT_EQ(json_string(parse_json(key->payload), "request_id"), id);
    files.push_back(save(id + ".json", key->payload));
  }
  // A retry of the publish_key request (same id, same content) is answered from its record and
  // the key published again (SPEC 3.4): attested too.
  const std::string first_id = json_string(parse_json(read_file(files[1])), "request_id");
  observer->publish("provision/" + device + "/request",
                    fmt::format(R"({{"request_id":{}{}}})", json_quote(first_id), asks[0].first));
  ASSERT_TRUE(observer->wait_count(
      "keys/" + device + "/public", 2, kResponseTimeout, [&](const Message& message) {
        return json_string(parse_json(message.payload), "request_id") == first_id;
      }));
  std::string repeated;
  for (const Message& message : observer->messages("keys/" + device + "/public"))
    if (json_string(parse_json(message.payload), "request_id") == first_id)
      repeated = message.payload;
  // The current key: the update's.
  EXPECT_EQ(json_string(parse_json(repeated), "fingerprint"),
            json_string(parse_json(read_file(files[2])), "fingerprint"));
  files.push_back(save("repeated.json", repeated));
  // Each checked against a message of the other key (before or after the update).
  auto fingerprint_of = [](const std::string& file) {
    return json_string(parse_json(read_file(file)), "fingerprint");
  };
  for (const std::string& file : files) {
    const auto other = std::find_if(files.begin(), files.end(), [&](const std::string& candidate) {
      return fingerprint_of(candidate) != fingerprint_of(file);
    });
    ASSERT_NE(other, files.end());
    const auto result =
        python(std::string(kServerVerifier) + kAttestationCheck, {file, *other, agent_key});
    EXPECT_EQ(result.exit_code, 0) << file << ": " << result.output;
  }
}

// ---- certificate requests (SPEC 3.2) ----

TEST_F(TrustTest, CsrVerifiesWithOpensslAndNamesTheDeviceAndUserForEveryKeyType) {
  start_agent({{"PROVISION_CSR", "true"}});
  int index = 0;
  for (const char* key_type : kKeyTypes) {
    const std::string device = unique_name("csr-");
    const std::string user = index++ % 2 == 0 ? "carol" : "";
    const auto json = parse_json(generate(device, user, key_type).payload);
    const std::string csr = json_string(json, "csr");
    ASSERT_NE(csr.find("-----BEGIN CERTIFICATE REQUEST-----"), std::string::npos)
        << key_type << ": " << csr;
    const std::string file = save(device + ".csr", csr);

    const auto verified =
        run_command("openssl req -in " + shell_quote(file) + " -verify -noout 2>&1");
    EXPECT_EQ(verified.exit_code, 0) << key_type << ": " << verified.output;
    EXPECT_NE(verified.output.find("verify OK"), std::string::npos) << verified.output;

    const auto subject =
        run_command("openssl req -in " + shell_quote(file) + " -noout -subject -nameopt compat");
    const std::string expected =
        "subject=/CN=" + device + (user.empty() ? "" : "/OU=" + user) + "\n";
    EXPECT_EQ(subject.output, expected) << key_type;

    const auto key = run_command("openssl req -in " + shell_quote(file) + " -noout -pubkey");
    EXPECT_EQ(key.output, json_string(json, "public_key")) << key_type;
    EXPECT_EQ(key.output, read_file(agent->device_dir(device, user) + "/sensor_public.pem"));
  }
}

// ---- the original server (SPEC 3.2: json format) ----

TEST_F(TrustTest, OriginalServerReadingOnlyPublicKeyStillGetsThePem) {
  start_agent({{"PROVISION_CSR", "true"}});
  const std::string device = unique_name("orig-");
  const Message key = generate(device, "5", "rsa-2048");
  const auto json = parse_json(key.payload);
  ASSERT_TRUE(json_has(json, "attestation") && json_has(json, "csr")) << key.payload;
  const auto result =
      python(kOriginalServer,
             {save("payload", key.payload), agent->device_dir(device, "5") + "/sensor_public.pem"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output, "2048\n");
}

// The original server sends user ids as integers (SPEC 3.1): the key message, its attestation and
// its CSR carry the string, as the original agent sent it.
TEST_F(TrustTest, IntegerUserIdIsAttestedAsItsString) {
  start_agent({{"PROVISION_CSR", "true"}});
  const std::string agent_key = agent_public_key_file();
  const std::string device = unique_name("int-");
  ASSERT_EQ(json_string(request(device, "int-1", R"(,"user_id":5)"), "status"), "ok");
  const auto key = wait_key(*observer, device, "int-1");
  ASSERT_TRUE(key);
  const auto json = parse_json(key->payload);
  EXPECT_EQ(json_string(json, "user_id"), "5") << key->payload;
  const std::string other = generate(unique_name("int-other-"), "").payload;
  const auto verified =
      python(std::string(kServerVerifier) + kAttestationCheck,
             {save("int.json", key->payload), save("other.json", other), agent_key});
  EXPECT_EQ(verified.exit_code, 0) << verified.output;
  const auto subject = run_command("openssl req -noout -subject -nameopt compat -in " +
                                   shell_quote(save("int.csr", json_string(json, "csr"))));
  EXPECT_EQ(subject.output, "subject=/CN=" + device + "/OU=5\n");
}

// ---- certificates (SPEC 5) ----

class CertificateTest : public TrustTest {
 protected:
  void SetUp() override {
    TrustTest::SetUp();
    ca = pki.root("fleet-ca");
    start_agent({{"PROVISION_CSR", "true"}, {"PROVISION_CA_FILE", ca.cert}});
  }

  // The device's key with its CSR as the agent published it, in a file.
  std::string generate_with_csr(const std::string& device, const std::string& user) {
    return save(device + ".csr", json_string(parse_json(generate(device, user).payload), "csr"));
  }

  std::string cert_file(const std::string& device, const std::string& user) const {
    return agent->device_dir(device, user) + "/sensor_cert.pem";
  }
  std::string backup_file(const std::string& device, const std::string& user) const {
    return agent->device_dir(device, user) + "/sensor_cert.prev.pem";
  }

  TestPki pki;
  TestPki::Ca ca;
};

TEST_F(CertificateTest, LeafForTheDevicesKeyFromTheCaIsStored) {
  const std::string device = unique_name("cert-");
  const std::string leaf = pki.sign(generate_with_csr(device, "dave"), ca, 30);
  const auto response = install(device, "dave", leaf);
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_EQ(json_string(response, "action"), "install_certificate");
  EXPECT_EQ(json_string(response, "fingerprint"),
            openssl_fingerprint(agent->device_dir(device, "dave") + "/sensor_public.pem"));
  EXPECT_EQ(read_file(cert_file(device, "dave")), read_file(leaf));
  EXPECT_EQ(file_mode(cert_file(device, "dave")), 0644);

  // The operator sees it: keys show names its subject and dates (SPEC section 7).
  const CommandResult shown =
      run_command(agent_shell_command() + " keys show " + device + " --user dave --keys-dir " +
                  shell_quote(agent->keys_dir()) + " 2>&1");
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  const std::string end =
      run_command("openssl x509 -noout -enddate -dateopt iso_8601 -in " + shell_quote(leaf))
          .output;  // "notAfter=2027-01-01 10:00:00Z"
  ASSERT_GT(end.size(), 29u) << end;
  const std::string not_after = end.substr(9, 10) + "T" + end.substr(20, 8) + "Z";
  // RFC 2253 order: the last RDN first.
  EXPECT_NE(shown.output.find("certificate: OU=dave,CN=" + device + ", valid "), std::string::npos)
      << shown.output;
  EXPECT_NE(shown.output.find(" to " + not_after), std::string::npos) << not_after << "\n"
                                                                      << shown.output;
}

TEST_F(CertificateTest, LeafWithItsIntermediateChainsToTheCa) {
  const TestPki::Ca intermediate = pki.intermediate(ca, "site-ca");
  const std::string device = unique_name("chain-");
  const std::string leaf = pki.sign(generate_with_csr(device, "erin"), intermediate, 30);
  const std::string alone = leaf;
  const std::string chain = save("chain.pem", read_file(leaf) + read_file(intermediate.cert));

  const auto without = install(device, "erin", alone);
  EXPECT_EQ(error_code(without), "invalid_request");
  EXPECT_FALSE(file_exists(cert_file(device, "erin")));

  const auto with = install(device, "erin", chain);
  EXPECT_EQ(json_string(with, "status"), "ok") << error_code(with);
  EXPECT_EQ(read_file(cert_file(device, "erin")), read_file(chain));
}

TEST_F(CertificateTest, EachWrongCertificateIsRefusedWithItsReasonAndNothingIsStored) {
  const std::string device = unique_name("wrong-");
  const std::string csr = generate_with_csr(device, "frank");
  const TestPki::Ca other_ca = pki.root("other-ca");
  const std::string garbage = save("garbage.pem", "not a certificate\n");
  struct Case {
    std::string what;
    std::string certificate;
    std::string reason;  // a part of error.message
  };
  const std::string with_key =
      save("with-key.pem", read_file(pki.sign(csr, ca, 30)) + read_file(pki.file("fleet-ca.key")));
  const std::vector<Case> cases = {
      {"another key", pki.sign(pki.new_csr("stranger", device), ca, 30), "for another key"},
      {"expired", pki.sign(csr, ca, 10, "-20d"), "expired at"},
      {"not yet valid", pki.sign(csr, ca, 30, "+10d"), "not valid before"},
      {"another CA", pki.sign(csr, other_ca, 30), "does not chain to PROVISION_CA_FILE"},
      {"not a certificate", garbage, "no PEM certificate"},
      {"a private key besides", with_key, "PRIVATE KEY"},
  };
  const auto before = list_tree(agent->keys_dir());
  for (const Case& c : cases) {
    const auto response = install(device, "frank", c.certificate);
    EXPECT_EQ(json_string(response, "status"), "error") << c.what;
    EXPECT_EQ(error_code(response), "invalid_request") << c.what;
    std::string message;
    if (response.IsObject() && response.HasMember("error"))
      message = json_string(response["error"], "message");
    EXPECT_NE(message.find(c.reason), std::string::npos) << c.what << ": " << message;
    EXPECT_EQ(list_tree(agent->keys_dir()), before) << c.what;
  }
  EXPECT_FALSE(file_exists(cert_file(device, "frank")));
}

TEST_F(CertificateTest, DeviceWithoutKeysOrRequestWithoutCertificateStoresNothing) {
  const std::string device = unique_name("nokeys-");
  const std::string leaf = pki.sign(pki.new_csr("nokeys", device), ca, 30);
  const auto before = list_tree(agent->keys_dir());
  EXPECT_EQ(error_code(install(device, "lena", leaf)), "not_found");
  const std::string keyed = unique_name("nofield-");
  generate(keyed, "lena");
  const auto with_keys = list_tree(agent->keys_dir());
  const auto response =
      request(keyed, unique_name("cert-"), R"(,"action":"install_certificate","user_id":"lena")");
  EXPECT_EQ(error_code(response), "invalid_request");
  EXPECT_EQ(list_tree(agent->keys_dir()), with_keys);
  EXPECT_NE(with_keys, before);
  EXPECT_FALSE(file_exists(agent->device_dir(device, "lena")));
}

TEST_F(CertificateTest, UpdateMovesTheCertificateToTheBackupAndDeleteRemovesBoth) {
  const std::string device = unique_name("move-");
  const std::string first = pki.sign(generate_with_csr(device, "gina"), ca, 30);
  ASSERT_EQ(json_string(install(device, "gina", first), "status"), "ok");

  const std::string id = unique_name("upd-");
  ASSERT_EQ(json_string(request(device, id, R"(,"user_id":"gina")", "update"), "status"), "ok");
  EXPECT_FALSE(file_exists(cert_file(device, "gina")));
  EXPECT_EQ(read_file(backup_file(device, "gina")), read_file(first));
  // The certificate still certifies the backup key it went with.
  const auto key = wait_key(*observer, device, id);
  ASSERT_TRUE(key);
  const std::string second =
      pki.sign(save("second.csr", json_string(parse_json(key->payload), "csr")), ca, 30);
  ASSERT_EQ(json_string(install(device, "gina", second), "status"), "ok");
  EXPECT_EQ(read_file(cert_file(device, "gina")), read_file(second));

  ASSERT_EQ(
      json_string(request(device, unique_name("del-"), R"(,"user_id":"gina")", "delete"), "status"),
      "ok");
  EXPECT_FALSE(file_exists(cert_file(device, "gina")));
  EXPECT_FALSE(file_exists(backup_file(device, "gina")));
  EXPECT_FALSE(file_exists(agent->device_dir(device, "gina")));
}

TEST_F(CertificateTest, BackupCertificateNeverSitsBesideABackupKeyItDoesNotCertify) {
  const std::string device = unique_name("twice-");
  const std::string leaf = pki.sign(generate_with_csr(device, "hank"), ca, 30);
  ASSERT_EQ(json_string(install(device, "hank", leaf), "status"), "ok");
  ASSERT_EQ(
      json_string(request(device, unique_name("upd-"), R"(,"user_id":"hank")", "update"), "status"),
      "ok");
  ASSERT_EQ(read_file(backup_file(device, "hank")), read_file(leaf));
  // A second rotation: the backup pair is now the key of the first update, which has no
  // certificate, so the first key's certificate must not stay beside it.
  ASSERT_EQ(
      json_string(request(device, unique_name("upd-"), R"(,"user_id":"hank")", "update"), "status"),
      "ok");
  EXPECT_FALSE(file_exists(cert_file(device, "hank")));
  EXPECT_FALSE(file_exists(backup_file(device, "hank")))
      << "sensor_cert.prev.pem certifies a key two generations old";
}

// ---- key age (SPEC 5) under a controlled clock ----

TEST_F(TrustTest, KeyOlderThanMaxAgeIsReportedAtStart) {
  ASSERT_TRUE(libfaketime_installed()) << libfaketime() << ": install Debian's faketime";
  start_agent({{"PROVISION_KEY_MAX_AGE", "1d"}});
  const std::string device = unique_name("old-");
  generate(device, "ivan");
  EXPECT_EQ(agent->stop(), 0);

  // Two days later, as the agent sees it.
  for (const auto& [name, value] : fake_clock("+2d")) agent->set_env(name, value);
  agent->start();
  const auto due = wait_due(device);
  ASSERT_TRUE(due) << "no rotation_due report";
  EXPECT_FALSE(due->retain);
  const auto json = parse_json(due->payload);
  EXPECT_EQ(json_string(json, "device_id"), device);
  EXPECT_EQ(json_string(json, "user_id"), "ivan");
  EXPECT_NE(json_string(json, "reason").find("PROVISION_KEY_MAX_AGE=1d"), std::string::npos)
      << due->payload;
  // Two days, and the real seconds since the key was written.
  EXPECT_GE(int_field(json, "age_s"), 2 * kDay) << due->payload;
  EXPECT_LT(int_field(json, "age_s"), 2 * kDay + 600) << due->payload;
  EXPECT_FALSE(json_has(json, "not_after")) << "no certificate, no not_after: " << due->payload;
}

// A Pi often boots before its network: the start's scan finds the key due while the broker is
// unreachable, and the report still reaches the server once the broker is (SPEC 3 and 5).
TEST_F(TrustTest, KeyDueAtAStartWithoutBrokerIsReportedOnceTheBrokerIsReached) {
  ASSERT_TRUE(libfaketime_installed()) << libfaketime() << ": install Debian's faketime";
  BrokerOptions persistent;
  persistent.persistence = true;  // the server's subscription outlives the broker's restart
  Broker reachable_later(persistent);
  MqttClientOptions session;
  session.client_id = unique_name("pa-it-server-");
  session.clean_session = false;
  observer = make_observer(reachable_later.port(), session);
  observer->subscribe("provision/status/+/rotation_due");
  agent = std::make_unique<Agent>(
      reachable_later.port(), std::map<std::string, std::string>{{"PROVISION_KEY_MAX_AGE", "1d"}});
  agent->start();
  ASSERT_TRUE(wait_online(*observer, *agent));
  const std::string device = unique_name("boot-");
  generate(device, "mona");
  EXPECT_EQ(agent->stop(), 0);

  reachable_later.stop();
  for (const auto& [name, value] : fake_clock("+2d")) agent->set_env(name, value);
  agent->start();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (agent->log().find("is due for rotation") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  ASSERT_NE(agent->log().find("is due for rotation"), std::string::npos)
      << "the start's scan did not run";
  reachable_later.start();
  const auto due = wait_due(device);
  ASSERT_TRUE(due) << "the report made while the broker was away never arrived";
  EXPECT_EQ(json_string(parse_json(due->payload), "user_id"), "mona");
}

TEST_F(TrustTest, ClockJumpAfterBootMakesKeysDueAndEachIsReportedOnceADay) {
  ASSERT_TRUE(libfaketime_installed()) << libfaketime() << ": install Debian's faketime";
  const std::string clock = work.file("clock");
  auto env = fake_clock("+0", clock);
  env["PROVISION_KEY_MAX_AGE"] = "1d";
  env["PA_CLOCK_CHECK_SECONDS"] = "0.5";
  start_agent(env);
  // A legacy device (no user): the scan reads legacy folders before users' folders.
  const std::string early = unique_name("early-");
  generate(early, "");

  // The clock is set two days forward, as a Pi's is when it finally syncs.
  write_file(clock, "+2d\n");
  const auto first = wait_due(early);
  ASSERT_TRUE(first) << "no rotation_due report after the jump";
  const auto json = parse_json(first->payload);
  EXPECT_EQ(json_string(json, "device_id"), early);
  EXPECT_FALSE(json_has(json, "user_id")) << first->payload;
  EXPECT_GE(int_field(json, "age_s"), 2 * kDay) << first->payload;
  EXPECT_LT(int_field(json, "age_s"), 2 * kDay + 600) << first->payload;
  EXPECT_NE(agent->log().find("the system clock jumped"), std::string::npos);

  // Another key, then another jump: it is reported, and the first one, still due, is not again.
  const std::string late = unique_name("late-");
  generate(late, "judy");
  write_file(clock, "+3d\n");
  const auto second = wait_due(late);
  ASSERT_TRUE(second) << "no rotation_due report after the second jump";
  EXPECT_EQ(json_string(parse_json(second->payload), "user_id"), "judy");
  EXPECT_EQ(observer->messages("provision/status/" + early + "/rotation_due").size(), 1u);
}

TEST_F(TrustTest, CertificatePastEightyPercentOfItsLifetimeIsDue) {
  ASSERT_TRUE(libfaketime_installed()) << libfaketime() << ": install Debian's faketime";
  TestPki pki;
  const TestPki::Ca ca = pki.root("age-ca");
  const std::string clock = work.file("clock");
  auto env = fake_clock("+0", clock);
  env["PROVISION_CSR"] = "true";
  env["PA_CLOCK_CHECK_SECONDS"] = "0.5";
  start_agent(env);  // no PROVISION_KEY_MAX_AGE: the certificate alone makes it due
  const std::string device = unique_name("aging-");
  const std::string csr =
      save("aging.csr", json_string(parse_json(generate(device, "kate").payload), "csr"));
  const std::string leaf = pki.sign(csr, ca, 10);
  ASSERT_EQ(json_string(install(device, "kate", leaf), "status"), "ok");
  const auto end =
      run_command("openssl x509 -in " + shell_quote(leaf) + " -noout -enddate -dateopt iso_8601");
  ASSERT_EQ(end.exit_code, 0) << end.output;
  // "notAfter=2026-12-11 19:03:21Z" -> "2026-12-11T19:03:21Z"
  std::string not_after = end.output.substr(end.output.find('=') + 1, 20);
  not_after[10] = 'T';

  write_file(clock, "+9d\n");  // 90% of its ten days
  const auto due = wait_due(device);
  ASSERT_TRUE(due) << "no rotation_due report";
  const auto json = parse_json(due->payload);
  EXPECT_EQ(json_string(json, "device_id"), device);
  EXPECT_EQ(json_string(json, "user_id"), "kate");
  EXPECT_NE(json_string(json, "reason").find("80%"), std::string::npos) << due->payload;
  EXPECT_EQ(json_string(json, "not_after"), not_after);
  EXPECT_GE(int_field(json, "age_s"), 9 * kDay) << due->payload;
  EXPECT_LT(int_field(json, "age_s"), 9 * kDay + 600) << due->payload;
}

}  // namespace
}  // namespace pa::test
