// End-to-end encryption, server signatures and replay protection (SPEC sections 3.1 and 4) as a
// server sees them through a real mosquitto, with envelopes and signatures made by the real
// PyCryptodome (Debian's python3-pycryptodome, module Cryptodome), and `provision-agent send`
// (SPEC section 7).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <ctime>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

// Debian's interpreter: the one python3-pycryptodome installs Cryptodome for.
constexpr const char* kPython = "/usr/bin/python3";

// PyCryptodome's documented hybrid scheme, driven by a JSON spec: public_key (file), plaintext,
// mode, key_size, tamper (a field to damage), sign_key (file: pkcs1_15 SHA-256 over the
// ciphertext). Or, with "open": decrypt an envelope file with a private key file.
constexpr const char* kEnvelopeScript = R"PY(
import base64, json, sys
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Cipher import AES, PKCS1_OAEP
from Cryptodome.Signature import pkcs1_15
from Cryptodome.Hash import SHA256

spec = json.load(open(sys.argv[1]))
if "open" in spec:
    env = json.load(open(spec["open"]))
    key = RSA.import_key(open(spec["private_key"]).read())
    session_key = PKCS1_OAEP.new(key).decrypt(base64.b64decode(env["session_key"]))
    mode = AES.MODE_GCM if env.get("mode") == "GCM" else AES.MODE_EAX
    cipher = AES.new(session_key, mode, nonce=base64.b64decode(env["nonce"]))
    sys.stdout.write(cipher.decrypt_and_verify(base64.b64decode(env["ciphertext"]),
                                               base64.b64decode(env["tag"])).decode())
    sys.exit(0)
key = RSA.import_key(open(spec["public_key"]).read())
session_key = get_random_bytes(spec.get("key_size", 16))
enc_session_key = PKCS1_OAEP.new(key).encrypt(session_key)
mode = spec.get("mode", "EAX")
cipher = AES.new(session_key, AES.MODE_EAX if mode == "EAX" else AES.MODE_GCM)
ciphertext, tag = cipher.encrypt_and_digest(spec["plaintext"].encode())
fields = {"session_key": enc_session_key, "nonce": cipher.nonce, "tag": tag,
          "ciphertext": ciphertext}
if spec.get("sign_key"):
    signer = RSA.import_key(open(spec["sign_key"]).read())
    fields["signature"] = pkcs1_15.new(signer).sign(SHA256.new(ciphertext))
if spec.get("tamper"):
    damaged = bytearray(fields[spec["tamper"]])
    damaged[len(damaged) // 2] ^= 0x01
    fields[spec["tamper"]] = bytes(damaged)
env = {name: base64.b64encode(value).decode() for name, value in fields.items()}
if mode != "EAX":
    env["mode"] = mode
print(json.dumps(env))
)PY";

struct Seal {
  std::string mode = "EAX";
  int key_size = 16;
  std::string tamper;    // "tag", "ciphertext", "session_key"
  std::string sign_key;  // a private key file
};

Seal sealed_with(const std::string& mode, int key_size = 16) {
  Seal seal;
  seal.mode = mode;
  seal.key_size = key_size;
  return seal;
}

std::int64_t now() {
  return static_cast<std::int64_t>(std::time(nullptr));
}

class E2eeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    observer = make_observer(broker.port());
    observer->subscribe("provision/status/+/replay_blocked");
  }

  // An agent with RSA device keys (envelopes need RSA) and the given settings, online.
  std::unique_ptr<Agent> start_agent(std::map<std::string, std::string> env = {}) {
    env.emplace("PROVISION_KEY_TYPE", "rsa-2048");
    auto agent = std::make_unique<Agent>(broker.port(), env);
    agent->start();
    EXPECT_TRUE(wait_online(*observer, *agent)) << "agent never published its online status";
    return agent;
  }

  // Publishes on P/<device>/<leaf> and returns the next response for the device (by count, so
  // responses without a request_id, such as decrypt_failed, are found too).
  rapidjson::Document publish(const std::string& device, const std::string& payload,
                              const std::string& leaf = "request") {
    const std::string topic = "provision/" + device + "/response";
    const std::size_t before = observer->messages(topic).size();
    observer->publish("provision/" + device + "/" + leaf, payload);
    EXPECT_TRUE(observer->wait_count(topic, before + 1, kResponseTimeout))
        << "no response to " << payload;
    const auto messages = observer->messages(topic);
    return parse_json(messages.size() > before ? messages[before].payload : "null");
  }

  // A PyCryptodome envelope of `plaintext` to the public key in `public_pem_file`.
  std::string envelope(const std::string& public_pem_file, const std::string& plaintext,
                       const Seal& seal = {}) {
    std::string spec = fmt::format(R"({{"public_key":{},"plaintext":{},"mode":{},"key_size":{})",
                                   json_quote(public_pem_file), json_quote(plaintext),
                                   json_quote(seal.mode), seal.key_size);
    if (!seal.tamper.empty()) spec += R"(,"tamper":)" + json_quote(seal.tamper);
    if (!seal.sign_key.empty()) spec += R"(,"sign_key":)" + json_quote(seal.sign_key);
    return python(spec + "}");
  }

  // PyCryptodome's reading of an envelope.
  std::string python_open(const std::string& envelope_json, const std::string& private_pem_file) {
    const std::string file = work.file(unique_name("envelope-") + ".json");
    write_file(file, envelope_json);
    return python(fmt::format(R"({{"open":{},"private_key":{}}})", json_quote(file),
                              json_quote(private_pem_file)));
  }

  std::string python(const std::string& spec) {
    const std::string script = work.file("envelope.py");
    if (!file_exists(script)) write_file(script, kEnvelopeScript);
    const std::string spec_file = work.file(unique_name("spec-") + ".json");
    write_file(spec_file, spec);
    auto result = run_command(std::string(kPython) + " " + shell_quote(script) + " " +
                              shell_quote(spec_file));
    EXPECT_EQ(result.exit_code, 0) << result.output;
    return result.output;
  }

  // The agent key from the agent's retained status message, written to a file.
  std::string agent_public_key_file(const Agent& agent) {
    auto status = observer->wait_for(agent.status_topic(), kOnlineTimeout, [](const Message& m) {
      auto json = parse_json(m.payload);
      return json_string(json, "status") == "online";
    });
    EXPECT_TRUE(status);
    auto json = parse_json(status ? status->payload : "{}");
    const std::string file = work.file(unique_name("agent-public-") + ".pem");
    write_file(file, json_string(json, "public_key"));
    return file;
  }

  // Generates a device key through a plaintext request and returns its public key file.
  std::string generate(const Agent& agent, const std::string& device, const std::string& user) {
    const std::string user_field = user.empty() ? "" : R"(,"user_id":)" + json_quote(user);
    auto response =
        publish(device, R"({"request_id":)" + json_quote(unique_name("gen-")) + user_field + "}");
    EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
    return agent.device_dir(device, user) + "/sensor_public.pem";
  }

  CommandResult send(const Agent& agent, const std::string& arguments) {
    return run_command(fmt::format("{} --mqtt-host 127.0.0.1 --mqtt-port {} --client-id {} send {}",
                                   agent_shell_command(), broker.port(),
                                   shell_quote(agent.client_id()), arguments));
  }

  // `send` as a server or an operator's laptop runs it: a client id base of its own, no agent's.
  CommandResult send_from_server(const std::string& arguments) {
    return run_command(fmt::format("{} --mqtt-host 127.0.0.1 --mqtt-port {} --client-id {} send {}",
                                   agent_shell_command(), broker.port(),
                                   shell_quote(unique_name("server-")), arguments));
  }

  // Makes an RSA key pair with the openssl CLI (the server's, for signatures).
  std::pair<std::string, std::string> openssl_key_pair(const std::string& name) {
    const std::string private_pem = work.file(name + "_private.pem");
    const std::string public_pem = work.file(name + "_public.pem");
    auto made = run_command("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " +
                            shell_quote(private_pem) + " && openssl pkey -in " +
                            shell_quote(private_pem) + " -pubout -out " + shell_quote(public_pem));
    EXPECT_EQ(made.exit_code, 0) << made.output;
    return {private_pem, public_pem};
  }

  std::optional<Message> replay_report(const std::string& device, const std::string& reason) {
    return observer->wait_for(
        "provision/status/" + device + "/replay_blocked", kResponseTimeout,
        [&](const Message& m) { return json_string(parse_json(m.payload), "reason") == reason; });
  }

  Broker broker;
  std::unique_ptr<MqttClient> observer;
  TempDir work;
};

bool is_encrypted(const rapidjson::Document& response) {
  return json_has(response, "encrypted") && response["encrypted"].IsBool() &&
         response["encrypted"].GetBool();
}

TEST_F(E2eeTest, DecryptsPyCryptodomeEaxAndGcmWith16And32ByteKeys) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "destructive"}});
  const std::string public_pem = generate(*agent, "e2ee01", "u1");
  for (const std::string mode : {"EAX", "GCM"})
    for (int key_size : {16, 32}) {
      SCOPED_TRACE(fmt::format("{} with a {}-byte key", mode, key_size));
      const std::string id = unique_name("enc-");
      Seal seal;
      seal.mode = mode;
      seal.key_size = key_size;
      auto response = publish(
          "e2ee01",
          envelope(public_pem,
                   R"({"action":"publish_key","user_id":"u1","request_id":)" + json_quote(id) + "}",
                   seal));
      EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
      EXPECT_EQ(json_string(response, "request_id"), id);
      EXPECT_TRUE(is_encrypted(response));
      EXPECT_TRUE(wait_key(*observer, "e2ee01", id));
    }
}

TEST_F(E2eeTest, TamperedEnvelopeOrWrongKeyIsDecryptFailedAndChangesNothing) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "off"}});
  const std::string public_pem = generate(*agent, "e2ee02", "u1");
  const std::string private_file = agent->device_dir("e2ee02", "u1") + "/sensor_private.pem";
  const std::string before = read_file(private_file);
  const std::string remove = R"({"action":"delete","user_id":"u1"})";
  for (const char* field : {"tag", "ciphertext", "session_key"}) {
    SCOPED_TRACE(field);
    Seal seal;
    seal.tamper = field;
    auto response = publish("e2ee02", envelope(public_pem, remove, seal), "delete");
    EXPECT_EQ(error_code(response), "decrypt_failed");
    EXPECT_TRUE(is_encrypted(response));
  }
  // Encrypted to a key the agent does not hold.
  const auto stranger = openssl_key_pair("stranger");
  auto response = publish("e2ee02", envelope(stranger.second, remove), "delete");
  EXPECT_EQ(error_code(response), "decrypt_failed");
  // An envelope is never read as plaintext, even when its fields are junk.
  response = publish("e2ee02",
                     R"({"session_key":"x","nonce":"y","tag":"z","ciphertext":"w","action":)"
                     R"("delete","user_id":"u1"})",
                     "delete");
  EXPECT_EQ(error_code(response), "decrypt_failed");
  EXPECT_EQ(read_file(private_file), before) << "a refused delete touched the keys";
  // The untampered one works.
  response = publish("e2ee02", envelope(public_pem, remove), "delete");
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_FALSE(file_exists(private_file));
}

TEST_F(E2eeTest, FindsTheKeyByScanningUserFoldersAndInTheLegacyFolder) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "destructive"}});
  // The same device under two users: the server's envelope names no folder, so the agent scans.
  generate(*agent, "e2ee03", "alpha");
  const std::string zeta_key = generate(*agent, "e2ee03", "zeta");
  auto response =
      publish("e2ee03",
              envelope(zeta_key, R"({"action":"update","user_id":"zeta","request_id":"scan-1"})"));
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_TRUE(is_encrypted(response));
  EXPECT_NE(agent->log().find("alpha/e2ee03/sensor_private.pem does not decrypt"),
            std::string::npos)
      << "alpha's key was not tried first";

  // Legacy layout <root>/<device>, then a delete encrypted to it.
  const std::string legacy_key = generate(*agent, "e2ee04", "");
  response = publish(
      "e2ee04", envelope(legacy_key, R"({"request_id":"legacy-1"})", sealed_with("GCM")), "delete");
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_EQ(json_string(response, "action"), "delete");
  EXPECT_FALSE(file_exists(agent->device_dir("e2ee04") + "/sensor_private.pem"));
}

TEST_F(E2eeTest, FirstRequestEncryptedToTheAgentKeyUnderPolicyAll) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "all"}});
  // The agent key: generated on first start in the state folder, private, and published.
  const std::string agent_key = agent->root() + "/state/agent_private.pem";
  ASSERT_TRUE(file_exists(agent_key));
  EXPECT_EQ(file_mode(agent_key), 0600);
  const std::string published = agent_public_key_file(*agent);
  auto derived = run_command("openssl pkey -in " + shell_quote(agent_key) + " -pubout");
  EXPECT_EQ(derived.output, read_file(published));

  auto response = publish("e2ee05", R"({"request_id":"plain-1"})");
  EXPECT_EQ(error_code(response), "e2ee_required");
  EXPECT_FALSE(file_exists(agent->device_dir("e2ee05") + "/sensor_private.pem"));

  response =
      publish("e2ee05", envelope(published, R"({"request_id":"first-1"})", sealed_with("EAX", 32)));
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_TRUE(is_encrypted(response));
  EXPECT_TRUE(file_exists(agent->device_dir("e2ee05") + "/sensor_private.pem"));
  EXPECT_TRUE(wait_key(*observer, "e2ee05", "first-1"));

  // The same key on the next start: it is not regenerated.
  agent->stop();
  const std::string key_text = read_file(agent_key);
  observer->clear();
  agent->start();
  ASSERT_TRUE(wait_online(*observer, *agent));
  EXPECT_EQ(read_file(agent_key), key_text);
}

TEST_F(E2eeTest, UsesTheOriginalAgentKeyUnderProjectRoot) {
  // $PROJECT_ROOT/keys/private.pem as PyCryptodome writes it (PKCS#1).
  const std::string project = work.file("project");
  auto made = run_command(
      std::string(kPython) + " -c " +
      shell_quote("import os,sys; from Cryptodome.PublicKey import RSA; k = RSA.generate(2048); "
                  "os.makedirs(sys.argv[1] + '/keys'); "
                  "open(sys.argv[1] + '/keys/private.pem', 'wb').write(k.export_key()); "
                  "open(sys.argv[1] + '/public.pem', 'wb').write(k.publickey().export_key())") +
      " " + shell_quote(project));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  // Written with the umask's 0644: the agent key obeys the key store root's rules (SPEC
  // section 5), so the agent refuses it and says how to fix it.
  const std::string key_file = project + "/keys/private.pem";
  ASSERT_EQ(file_mode(key_file), 0644);
  {
    Agent refused(broker.port(), {{"PROJECT_ROOT", project}});
    refused.start();
    const auto status = refused.wait_exit(15s);
    ASSERT_TRUE(status);
    EXPECT_EQ(*status, 78);
    EXPECT_NE(refused.log().find("fix: chmod 600 " + key_file), std::string::npos) << refused.log();
  }
  ASSERT_EQ(::chmod(key_file.c_str(), 0600), 0);
  auto agent = start_agent({{"PROJECT_ROOT", project}});
  EXPECT_FALSE(file_exists(agent->root() + "/state/agent_private.pem"));
  // PyCryptodome writes no final newline; the agent's PEM has one.
  EXPECT_EQ(read_file(agent_public_key_file(*agent)), read_file(project + "/public.pem") + "\n");
  auto response = publish("e2ee06", envelope(project + "/public.pem", R"({"request_id":"p-1"})"));
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
}

TEST_F(E2eeTest, PlaintextUpdateAndDeleteRefusedUnderDestructiveAcceptedUnderOff) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "destructive"}});
  generate(*agent, "e2ee07", "u1");
  const std::string private_file = agent->device_dir("e2ee07", "u1") + "/sensor_private.pem";
  const std::string before = read_file(private_file);
  auto response = publish("e2ee07", R"({"user_id":"u1","request_id":"pu-1"})", "update");
  EXPECT_EQ(error_code(response), "e2ee_required");
  response = publish("e2ee07", R"({"user_id":"u1","request_id":"pd-1"})", "delete");
  EXPECT_EQ(error_code(response), "e2ee_required");
  EXPECT_EQ(read_file(private_file), before);
  // generate is not destructive: plaintext is fine.
  response = publish("e2ee07", R"({"user_id":"u1","request_id":"pg-1"})");
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  agent->stop();

  auto off = start_agent({{"PROVISION_E2EE_POLICY", "off"}});
  generate(*off, "e2ee08", "u1");
  const std::string off_private = off->device_dir("e2ee08", "u1") + "/sensor_private.pem";
  const std::string off_before = read_file(off_private);
  response = publish("e2ee08", R"({"user_id":"u1","request_id":"pu-2"})", "update");
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_NE(read_file(off_private), off_before);
  response = publish("e2ee08", R"({"user_id":"u1","request_id":"pd-2"})", "delete");
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_FALSE(file_exists(off_private));
}

// A captured envelope sent again is answered from the record and changes nothing; the same id
// with other content is a replay; both before and after a restart (SPEC 3.4).
TEST_F(E2eeTest, CapturedRequestChangesNothingBeforeAndAfterARestart) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "off"}});
  generate(*agent, "e2ee09", "u1");
  // Encrypted to the agent key, which (unlike the device key) an update does not rotate, so a
  // captured copy would still decrypt.
  const std::string update = envelope(
      agent_public_key_file(*agent), R"({"action":"update","user_id":"u1","request_id":"once-1"})");
  auto response = publish("e2ee09", update);
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  const std::string rotated = read_file(agent->device_dir("e2ee09", "u1") + "/sensor_public.pem");

  // The same bytes again (a captured message): answered as recorded, nothing rotated.
  response = publish("e2ee09", update);
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_TRUE(json_has(response, "duplicate"));
  EXPECT_EQ(json_string(response, "request_id"), "once-1");
  EXPECT_TRUE(is_encrypted(response));
  EXPECT_EQ(read_file(agent->device_dir("e2ee09", "u1") + "/sensor_public.pem"), rotated);

  // Other content under the same id: refused and reported.
  response =
      publish("e2ee09", envelope(agent_public_key_file(*agent),
                                 R"({"action":"update","user_id":"u1","request_id":"once-1",)"
                                 R"("key_type":"rsa-2048"})"));
  EXPECT_EQ(error_code(response), "replay");
  auto report = replay_report("e2ee09", "id_reused");
  ASSERT_TRUE(report);
  auto report_json = parse_json(report->payload);
  EXPECT_EQ(json_string(report_json, "device_id"), "e2ee09");
  EXPECT_EQ(json_string(report_json, "request_id"), "once-1");
  EXPECT_FALSE(report->retain);
  EXPECT_EQ(read_file(agent->device_dir("e2ee09", "u1") + "/sensor_public.pem"), rotated);

  // After a restart: the captured envelope again, and a plaintext copy with the same id.
  agent->stop();
  observer->clear();
  agent->start();
  ASSERT_TRUE(wait_online(*observer, *agent));
  response = publish("e2ee09", update);
  EXPECT_TRUE(json_has(response, "duplicate")) << error_code(response);
  response = publish("e2ee09", R"({"action":"update","user_id":"u1","request_id":"once-1"})");
  EXPECT_TRUE(json_has(response, "duplicate")) << error_code(response);
  EXPECT_EQ(read_file(agent->device_dir("e2ee09", "u1") + "/sensor_public.pem"), rotated);
  // The record lives in the state folder.
  EXPECT_EQ(file_mode(agent->root() + "/state/ledger.journal"), 0600);
}

TEST_F(E2eeTest, StaleTimestampsAndDuplicateDeliveriesAreReplays) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "off"}, {"PROVISION_MAX_SKEW", "60"}});
  generate(*agent, "e2ee10", "u1");
  const std::int64_t stale = now() - 600;
  auto response =
      publish("e2ee10", fmt::format(R"({{"user_id":"u1","request_id":"stale-1","ts":{}}})", stale),
              "update");
  EXPECT_EQ(error_code(response), "replay");
  auto report = replay_report("e2ee10", "timestamp_outside_window");
  ASSERT_TRUE(report);
  auto report_json = parse_json(report->payload);
  ASSERT_TRUE(json_has(report_json, "ts"));
  EXPECT_EQ(report_json["ts"].GetInt64(), stale);
  EXPECT_EQ(json_string(report_json, "request_id"), "stale-1");

  // The original agent's RFC 3339 form, without an id: it must grow.
  const std::string stamp = fmt::format(R"({{"user_id":"u1","timestamp":"{}"}})", [] {
    char text[32];
    const std::time_t t = std::time(nullptr) - 5;
    std::tm utc{};
    gmtime_r(&t, &utc);
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return std::string(text);
  }());
  response = publish("e2ee10", stamp, "update");
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  response = publish("e2ee10", stamp, "update");
  EXPECT_EQ(error_code(response), "replay");
  EXPECT_TRUE(replay_report("e2ee10", "timestamp_not_newer"));

  // An update with no id and no time, delivered twice within 30 s.
  response = publish("e2ee10", R"({"user_id":"u1"})", "update");
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  response = publish("e2ee10", R"({"user_id":"u1"})", "update");
  EXPECT_EQ(error_code(response), "replay");
  EXPECT_TRUE(replay_report("e2ee10", "duplicate_message"));
}

TEST_F(E2eeTest, ServerSignatureRequiredWhenServerKeyIsSet) {
  const auto server = openssl_key_pair("server");
  auto agent =
      start_agent({{"PROVISION_E2EE_POLICY", "off"}, {"PROVISION_SERVER_PUBKEY", server.second}});
  const std::string agent_key = agent_public_key_file(*agent);
  // A signed request names its device, action, id and time (SPEC section 4).
  const std::string request = fmt::format(
      R"({{"device_id":"e2ee11","action":"generate_and_publish_key","request_id":"signed-1",)"
      R"("ts":{}}})",
      now());

  auto response = publish("e2ee11", request);
  EXPECT_EQ(error_code(response), "unauthorized") << "plaintext with a server key";
  response = publish("e2ee11", envelope(agent_key, R"({"request_id":"unsigned-1"})"));
  EXPECT_EQ(error_code(response), "unauthorized") << "unsigned envelope";
  const auto impostor = openssl_key_pair("impostor");
  Seal forged;
  forged.sign_key = impostor.first;
  response = publish("e2ee11", envelope(agent_key, R"({"request_id":"forged-1"})", forged));
  EXPECT_EQ(error_code(response), "unauthorized") << "signed by another key";
  Seal broken;
  broken.sign_key = server.first;
  broken.tamper = "signature";
  response = publish("e2ee11", envelope(agent_key, R"({"request_id":"broken-1"})", broken));
  EXPECT_EQ(error_code(response), "unauthorized") << "damaged signature";
  EXPECT_FALSE(file_exists(agent->device_dir("e2ee11") + "/sensor_private.pem"));

  // Signed by the server with PyCryptodome's pkcs1_15.
  Seal signed_seal;
  signed_seal.sign_key = server.first;
  signed_seal.mode = "GCM";
  response = publish("e2ee11", envelope(agent_key, request, signed_seal));
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_TRUE(file_exists(agent->device_dir("e2ee11") + "/sensor_private.pem"));
}

// What was measured on ca1caa2: a signed generate for devA with no device_id and no ts inside,
// published later on devB's delete topic, deleted devB's keys. A signature now binds the device,
// the action, the id and the time (SPEC section 4).
TEST_F(E2eeTest, SignatureCannotBeMovedToAnotherDeviceOrAction) {
  const auto server = openssl_key_pair("server");
  auto agent =
      start_agent({{"PROVISION_E2EE_POLICY", "off"}, {"PROVISION_SERVER_PUBKEY", server.second}});
  const std::string agent_key = agent_public_key_file(*agent);
  Seal signed_seal;
  signed_seal.sign_key = server.first;
  auto signed_request = [&](const std::string& plaintext) {
    return envelope(agent_key, plaintext, signed_seal);
  };
  // devB has keys (made by a properly signed request).
  auto response = publish(
      "devB",
      signed_request(fmt::format(
          R"({{"device_id":"devB","action":"generate","request_id":"b-1","ts":{}}})", now())));
  ASSERT_EQ(json_string(response, "status"), "ok") << error_code(response);
  const std::string devb_key = agent->device_dir("devB") + "/sensor_private.pem";
  const std::string devb_before = read_file(devb_key);

  // The measured attack: a generate for devA that names neither device nor time...
  const std::string loose = signed_request(R"({"request_id":"a-1"})");
  response = publish("devA", loose);
  EXPECT_EQ(error_code(response), "unauthorized");
  // ...replayed on devB's delete topic.
  response = publish("devB", loose, "delete");
  EXPECT_EQ(error_code(response), "unauthorized");
  EXPECT_EQ(read_file(devb_key), devb_before);

  // Each binding field is required.
  const std::int64_t ts = now();
  for (const std::string& plaintext :
       {fmt::format(R"({{"action":"delete","request_id":"x-1","ts":{}}})", ts),
        fmt::format(R"({{"device_id":"devB","request_id":"x-2","ts":{}}})", ts),
        fmt::format(R"({{"device_id":"devB","action":"delete","ts":{}}})", ts),
        std::string(R"({"device_id":"devB","action":"delete","request_id":"x-4"})")}) {
    response = publish("devB", signed_request(plaintext), "delete");
    EXPECT_EQ(error_code(response), "unauthorized") << plaintext;
  }
  // A complete signed generate for devA moved to devB: the device in it does not match.
  const std::string for_a = signed_request(
      fmt::format(R"({{"device_id":"devA","action":"generate","request_id":"a-2","ts":{}}})", ts));
  response = publish("devB", for_a);
  EXPECT_EQ(error_code(response), "device_mismatch");
  // ...and on the delete topic its action does not match.
  const std::string gen_b = signed_request(
      fmt::format(R"({{"device_id":"devB","action":"generate","request_id":"b-2","ts":{}}})", ts));
  response = publish("devB", gen_b, "delete");
  EXPECT_EQ(error_code(response), "invalid_request");
  EXPECT_EQ(read_file(devb_key), devb_before);
  EXPECT_FALSE(file_exists(agent->device_dir("devA") + "/sensor_private.pem"));
}

TEST_F(E2eeTest, SendPlainEncryptedToTheDeviceAndFailing) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "destructive"}});
  auto result = send(*agent, "generate send01 send02 --user u1 --wait 30");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* device : {"send01", "send02"}) {
    EXPECT_NE(result.output.find(std::string(device) + " response {"), std::string::npos)
        << result.output;
    EXPECT_NE(result.output.find(std::string(device) + " key {"), std::string::npos)
        << result.output;
  }
  EXPECT_NE(result.output.find(R"("status":"ok")"), std::string::npos);

  // The device's public key as the server stores it: from the published message.
  auto key = observer->wait_for("keys/send01/public", kResponseTimeout);
  ASSERT_TRUE(key);
  const std::string device_key = work.file("send01_public.pem");
  write_file(device_key, json_string(parse_json(key->payload), "public_key"));
  const std::string private_copy = work.file("send01_private.pem");
  write_file(private_copy, read_file(agent->device_dir("send01", "u1") + "/sensor_private.pem"),
             0600);

  // Plaintext update is refused under destructive, and send says so with a non-zero exit.
  result = send(*agent, "update send01 --user u1 --wait 30");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("e2ee_required"), std::string::npos) << result.output;

  observer->subscribe("provision/send01/request");
  result = send(*agent, "update send01 --user u1 --wait 30 --encrypt " + shell_quote(device_key));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find(R"("encrypted":true)"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("send01 key {"), std::string::npos) << result.output;

  // What send published opens with PyCryptodome and the device's (previous) private key.
  auto sent = observer->wait_for("provision/send01/request", kResponseTimeout, [](auto& m) {
    return json_has(parse_json(m.payload), "ciphertext");
  });
  ASSERT_TRUE(sent);
  const std::string plaintext = python_open(sent->payload, private_copy);
  auto request = parse_json(plaintext);
  ASSERT_TRUE(request.IsObject()) << plaintext;
  EXPECT_EQ(json_string(request, "action"), "update");
  EXPECT_EQ(json_string(request, "device_id"), "send01");
  EXPECT_EQ(json_string(request, "user_id"), "u1");
  EXPECT_TRUE(json_has(request, "ts"));

  // A request that fails: a non-zero exit and the error on the output.
  result = send(*agent, "publish_key nosuchdevice --wait 30");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("not_found"), std::string::npos) << result.output;
  // Several devices, one failing: still non-zero.
  result = send(*agent, "publish_key send02 nosuchdevice --user u1 --wait 30");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("send02 key {"), std::string::npos) << result.output;
}

TEST_F(E2eeTest, SendEncryptsToTheAgentAndSigns) {
  const auto server = openssl_key_pair("server");
  auto agent =
      start_agent({{"PROVISION_E2EE_POLICY", "all"}, {"PROVISION_SERVER_PUBKEY", server.second}});

  auto result = send(*agent, "generate send03 --wait 30 --encrypt-to-agent");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("unauthorized"), std::string::npos) << result.output;

  result = send(*agent,
                "generate send03 --wait 30 --encrypt-to-agent --sign " + shell_quote(server.first));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find(R"("encrypted":true)"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("send03 key {"), std::string::npos) << result.output;
  EXPECT_TRUE(file_exists(agent->device_dir("send03") + "/sensor_private.pem"));

  result = send(*agent, "delete send03 --wait 30 --mode GCM --encrypt-to-agent --sign " +
                            shell_quote(server.first));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(file_exists(agent->device_dir("send03") + "/sensor_private.pem"));

  // Usage errors.
  result = send(*agent, "generate send04 --sign " + shell_quote(server.first));
  EXPECT_EQ(result.exit_code, 78) << result.output;
  EXPECT_NE(result.output.find("--sign needs"), std::string::npos) << result.output;
  result = send(*agent, "generate ../x --wait 5");
  EXPECT_EQ(result.exit_code, 78) << result.output;
}

// SPEC section 7: --encrypt-to-agent finds the only agent online on P/agents/+/status, whoever
// sends; under policy "all" an ok answer proves the agent decrypted the request.
TEST_F(E2eeTest, SendEncryptsToTheOnlyAgentOnline) {
  auto agent = start_agent({{"PROVISION_E2EE_POLICY", "all"}});
  auto result = send_from_server("generate find01 --wait 30 --encrypt-to-agent");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("find01 response {"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(R"("status":"ok")"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(R"("encrypted":true)"), std::string::npos) << result.output;
  EXPECT_TRUE(file_exists(agent->device_dir("find01") + "/sensor_private.pem"));

  // send connected with a client id of its own: the agent kept its session (no will, no
  // reconnect) and is still running.
  EXPECT_TRUE(agent->running());
  for (const Message& status : observer->messages(agent->status_topic())) {
    EXPECT_EQ(json_string(parse_json(status.payload), "status"), "online") << status.payload;
  }
}

TEST_F(E2eeTest, SendWithSeveralAgentsOnlineNamesThemOrUsesTheOneGivenWithAgent) {
  auto first = start_agent({{"PROVISION_E2EE_POLICY", "all"}, {"PROVISION_DEVICES", "a-*"}});
  auto second = start_agent({{"PROVISION_E2EE_POLICY", "all"}, {"PROVISION_DEVICES", "b-*"}});

  auto result = send_from_server("generate a-dev01 --wait 30 --encrypt-to-agent");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("several agents online"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(first->client_id()), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(second->client_id()), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("--agent"), std::string::npos) << result.output;
  EXPECT_FALSE(file_exists(first->device_dir("a-dev01")));

  // --agent picks that agent's key: the second agent decrypts what is sent to it...
  result = send_from_server("generate b-dev01 --wait 30 --encrypt-to-agent --agent " +
                            shell_quote(second->client_id()));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find(R"("encrypted":true)"), std::string::npos) << result.output;
  EXPECT_TRUE(file_exists(second->device_dir("b-dev01") + "/sensor_private.pem"));
  // ...and cannot decrypt a request for its device sealed to the first agent's key.
  result = send_from_server("generate b-dev02 --wait 30 --encrypt-to-agent --agent " +
                            shell_quote(first->client_id()));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("decrypt_failed"), std::string::npos) << result.output;
  EXPECT_FALSE(file_exists(second->device_dir("b-dev02")));
  result = send_from_server("generate a-dev02 --wait 30 --encrypt-to-agent --agent " +
                            shell_quote(first->client_id()));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(file_exists(first->device_dir("a-dev02") + "/sensor_private.pem"));

  // Once the second agent is gone (its retained status says offline), the first is the only one.
  EXPECT_EQ(second->stop(), 0);
  result = send_from_server("generate a-dev03 --wait 30 --encrypt-to-agent");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_TRUE(file_exists(first->device_dir("a-dev03") + "/sensor_private.pem"));
  result = send_from_server("generate b-dev03 --wait 30 --encrypt-to-agent --agent " +
                            shell_quote(second->client_id()));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("agent " + second->client_id() + " is offline"), std::string::npos)
      << result.output;
  result = send_from_server("generate a-dev04 --wait 30 --encrypt-to-agent --agent no-such-agent");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("no retained status on provision/agents/no-such-agent/status"),
            std::string::npos)
      << result.output;
  // --agent without --encrypt-to-agent is a usage error.
  result = send_from_server("generate a-dev05 --agent " + shell_quote(first->client_id()));
  EXPECT_EQ(result.exit_code, 78) << result.output;
}

TEST_F(E2eeTest, SendWithNoAgentOnlineSuggestsAgent) {
  auto result = send_from_server("generate none01 --wait 10 --encrypt-to-agent");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("no agent online"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("--agent ID"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace pa::test
