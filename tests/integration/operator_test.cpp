// The operator commands (SPEC section 7): `keys list/show/verify` on a key store made through the
// key store's own API with a corrupt private key, a mismatched public key and a loose mode, and
// `check` against a real mosquitto that is up, down, refusing the credentials, or speaking TLS.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <sstream>

#include "agent_harness.hpp"
#include "base/time.hpp"
#include "keystore/key_pair.hpp"
#include "keystore/key_store.hpp"

namespace pa::test {
namespace {

using keystore::KeyType;

// Runs the agent (under the cross build's emulator, if any) with only these variables (and PATH)
// in its environment, stderr merged.
CommandResult run_agent(const std::string& arguments,
                        const std::map<std::string, std::string>& env) {
  std::string command = "env -i PATH=/usr/bin:/bin";
  for (const auto& [name, value] : env) command += " " + shell_quote(name + "=" + value);
  return run_command(command + " " + agent_shell_command() + " " + arguments + " 2>&1");
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The one line that starts with `prefix`; "" (and a test failure) when there is none or several.
std::string line_starting(const std::string& output, const std::string& prefix) {
  std::string found;
  int count = 0;
  for (const std::string& line : lines_of(output)) {
    if (starts_with(line, prefix)) {
      found = line;
      ++count;
    }
  }
  EXPECT_EQ(count, 1) << "lines starting with \"" << prefix << "\" in:\n" << output;
  return found;
}

// The `keys list` row of a device: the columns separated by blanks.
std::vector<std::string> list_row(const std::string& output, const std::string& user,
                                  const std::string& device) {
  for (const std::string& line : lines_of(output)) {
    std::istringstream in(line);
    std::vector<std::string> cells;
    for (std::string cell; in >> cell;) cells.push_back(cell);
    if (cells.size() == 8 && cells[0] == user && cells[1] == device) return cells;
  }
  ADD_FAILURE() << "no row for " << user << "/" << device << " in:\n" << output;
  return std::vector<std::string>(8);
}

// Every file under a folder with its mode and content, to prove a command changed nothing.
std::string snapshot(const std::string& root) {
  std::string state;
  for (const std::string& relative : list_tree(root)) {
    const std::string path = root + "/" + relative;
    struct stat st {};
    ::lstat(path.c_str(), &st);
    state += fmt::format("{} {:o}\n", relative, st.st_mode & 07777);
    if (S_ISREG(st.st_mode)) state += read_file(path);
  }
  return state;
}

// A key store made through the key store API: four sound ec-p256 pairs (one with a backup
// generation), then three of them broken the ways an operator meets in the field.
class KeyStoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    keystore::KeyStore store(keys_dir());
    for (const auto& [user, device] : std::vector<std::pair<std::string, std::string>>{
             {"alice", "good01"}, {"alice", "corrupt01"}, {"bob", "mismatch01"}, {"", "loose01"}}) {
      const std::optional<std::string> owner =
          user.empty() ? std::nullopt : std::optional<std::string>(user);
      fingerprints[device] =
          store.store(owner, device, keystore::generate_key_pair(KeyType::ec_p256), false)
              .fingerprint;
    }
    // A rotation: good01's first pair becomes the backup generation.
    fingerprints["good01"] =
        store.store("alice", "good01", keystore::generate_key_pair(KeyType::ec_p256), true)
            .fingerprint;
  }

  void break_store() {
    write_file(path("alice/corrupt01/sensor_private.pem"), "this is not a key\n", 0600);
    const keystore::KeyPair other = keystore::generate_key_pair(KeyType::ec_p256);
    write_file(path("bob/mismatch01/sensor_public.pem"), other.public_pem, 0644);
    ::chmod(path("loose01/sensor_private.pem").c_str(), 0644);
  }

  std::string keys_dir() const { return dir.file("sensor_keys"); }
  std::string path(const std::string& relative) const { return keys_dir() + "/" + relative; }

  std::map<std::string, std::string> env() const {
    return {{"PROVISION_KEYS_DIR", keys_dir()},
            {"PROVISION_PLUGIN_DIR", PA_PLUGIN_BUILD_DIR},
            {"MQTT_HOST", "127.0.0.1"},
            {"MQTT_CLIENT_ID", unique_name("pa-it-operator")},
            {"STATE_DIRECTORY", dir.path()}};
  }

  TempDir dir;
  std::map<std::string, std::string> fingerprints;
};

using KeysCommandTest = KeyStoreFixture;

TEST_F(KeysCommandTest, ListShowsEveryDeviceWithTypeFingerprintModesAndStatus) {
  break_store();
  const CommandResult result = run_agent("keys list", env());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(lines_of(result.output).front(), "key store: " + keys_dir()) << result.output;

  const auto good = list_row(result.output, "alice", "good01");
  EXPECT_EQ(good[2], "ec-p256");
  EXPECT_EQ(good[3], fingerprints["good01"]);
  EXPECT_EQ(good[3], openssl_fingerprint(path("alice/good01/sensor_public.pem")));
  EXPECT_EQ(good[4], "0700/0600/0644");
  EXPECT_EQ(good[5], "ok");
  // Just made: an age in seconds (or a minute on a slow machine), no certificate.
  EXPECT_TRUE(good[6].back() == 's' || good[6] == "1m") << good[6];
  EXPECT_EQ(good[7], "-");

  EXPECT_EQ(list_row(result.output, "alice", "corrupt01")[5], "corrupt");
  const auto mismatch = list_row(result.output, "bob", "mismatch01");
  EXPECT_EQ(mismatch[5], "mismatch");
  EXPECT_EQ(mismatch[3], fingerprints["mismatch01"]) << "the fingerprint of the private key";
  const auto loose = list_row(result.output, "-", "loose01");
  EXPECT_EQ(loose[4], "0700/0644/0644");
  EXPECT_EQ(loose[5], "loose-mode");
}

TEST_F(KeysCommandTest, VerifyPrintsEachProblemWithPathAndFixAndRepairsNothing) {
  break_store();
  const std::string before = snapshot(keys_dir());
  const CommandResult result = run_agent("keys verify", env());
  EXPECT_EQ(result.exit_code, 1) << result.output;

  EXPECT_EQ(line_starting(result.output, "OK   key store root " + keys_dir()).empty(), false);
  EXPECT_EQ(line_starting(result.output, "OK   alice/good01: ec-p256 " + fingerprints["good01"]),
            "OK   alice/good01: ec-p256 " + fingerprints["good01"]);

  const std::string corrupt =
      line_starting(result.output, "FAIL " + path("alice/corrupt01/sensor_private.pem") + ": ");
  EXPECT_TRUE(contains(corrupt, "not a usable private key")) << corrupt;
  EXPECT_TRUE(contains(corrupt, "; fix: rm -r " + path("alice/corrupt01"))) << corrupt;

  const std::string mismatch =
      line_starting(result.output, "FAIL " + path("bob/mismatch01/sensor_public.pem") + ": ");
  EXPECT_TRUE(contains(mismatch, "does not match the private key")) << mismatch;
  EXPECT_TRUE(contains(mismatch, "; fix: openssl pkey -in " +
                                     path("bob/mismatch01/sensor_private.pem") + " -pubout"))
      << mismatch;

  EXPECT_EQ(line_starting(result.output, "FAIL " + path("loose01/sensor_private.pem") + ": "),
            "FAIL " + path("loose01/sensor_private.pem") +
                ": mode 0644 gives group and world access; a private key must be 0600; fix: "
                "chmod 600 " +
                path("loose01/sensor_private.pem"));
  EXPECT_EQ(lines_of(result.output).back(), "4 devices checked, 3 with problems") << result.output;

  // Read-only: KeyStore::load would have rewritten the mismatched public key.
  EXPECT_EQ(snapshot(keys_dir()), before);
}

TEST_F(KeysCommandTest, VerifyPassesOnASoundStore) {
  const CommandResult result = run_agent("keys verify", env());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const std::string& line : lines_of(result.output)) {
    EXPECT_FALSE(starts_with(line, "FAIL")) << line;
  }
  EXPECT_EQ(lines_of(result.output).back(), "4 devices checked, 0 with problems");
}

TEST_F(KeysCommandTest, ShowPrintsTypeFingerprintPublicKeyPathsModesAndBackup) {
  const CommandResult result = run_agent("keys show good01 --user alice", env());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(line_starting(result.output, "device:"), "device:      good01");
  EXPECT_EQ(line_starting(result.output, "user:"), "user:        alice");
  EXPECT_EQ(line_starting(result.output, "key type:"), "key type:    ec-p256");
  EXPECT_EQ(line_starting(result.output, "fingerprint:"), "fingerprint: " + fingerprints["good01"]);
  EXPECT_EQ(line_starting(result.output, "status:"), "status:      ok");
  EXPECT_TRUE(starts_with(line_starting(result.output, "backup:"), "backup:      yes"));
  EXPECT_TRUE(contains(result.output, read_file(path("alice/good01/sensor_public.pem"))))
      << result.output;
  // "  <mode> <owner> <path>" per file.
  for (const auto& [mode, file] :
       std::vector<std::pair<std::string, std::string>>{{"0700", ""},
                                                        {"0600", "/sensor_private.pem"},
                                                        {"0644", "/sensor_public.pem"},
                                                        {"0600", "/sensor_private.prev.pem"}}) {
    const std::string file_path = path("alice/good01") + file;
    bool found = false;
    for (const std::string& line : lines_of(result.output)) {
      found = found || (starts_with(line, "  " + mode + " ") && ends_with(line, " " + file_path));
    }
    EXPECT_TRUE(found) << mode << " " << file_path << " in:\n" << result.output;
  }
}

TEST_F(KeysCommandTest, ShowOfAnUnknownDeviceExitsOne) {
  const CommandResult unknown = run_agent("keys show nosuch01", env());
  EXPECT_EQ(unknown.exit_code, 1) << unknown.output;
  EXPECT_TRUE(contains(unknown.output, "no keys for device nosuch01")) << unknown.output;
  // good01 belongs to alice, not bob.
  const CommandResult wrong_user = run_agent("keys show good01 --user bob", env());
  EXPECT_EQ(wrong_user.exit_code, 1) << wrong_user.output;
}

TEST_F(KeysCommandTest, ShowWithoutUserFindsTheLegacyDevice) {
  const CommandResult result = run_agent("keys show loose01", env());
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(line_starting(result.output, "user:"), "user:        - (legacy layout)");
  EXPECT_EQ(line_starting(result.output, "certificate:"), "certificate: none");
  EXPECT_TRUE(starts_with(line_starting(result.output, "created:"), "created:     20"));
  EXPECT_EQ(line_starting(result.output, "fingerprint:"),
            "fingerprint: " + fingerprints["loose01"]);
}

// Sets a private key's modification time, which is the key's age (SPEC section 5), `days` back.
void age_key(const std::string& private_key, int days) {
  const CommandResult touched =
      run_command(fmt::format("touch -d '{} days ago' {}", days, shell_quote(private_key)));
  ASSERT_EQ(touched.exit_code, 0) << touched.output;
}

TEST_F(KeysCommandTest, ListShowsEachKeysAgeAndMarksThoseDue) {
  age_key(path("alice/good01/sensor_private.pem"), 400);
  auto variables = env();
  variables["PROVISION_KEY_MAX_AGE"] = "365d";
  const CommandResult result = run_agent("keys list", variables);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(list_row(result.output, "alice", "good01")[6], "400d(due)") << result.output;
  const std::string young = list_row(result.output, "bob", "mismatch01")[6];
  EXPECT_NE(young.find_first_of("sm"), std::string::npos) << young;
  EXPECT_EQ(young.find("due"), std::string::npos) << young;
}

TEST_F(KeysCommandTest, DueListsKeysPastTheMaximumAgeAndExitsOne) {
  age_key(path("alice/good01/sensor_private.pem"), 400);
  age_key(path("loose01/sensor_private.pem"), 10);
  auto variables = env();
  variables["PROVISION_KEY_MAX_AGE"] = "365d";
  const std::string before = snapshot(keys_dir());
  const CommandResult due = run_agent("keys due", variables);
  EXPECT_EQ(due.exit_code, 1) << due.output;
  const std::string line = line_starting(due.output, "DUE  alice/good01: ");
  EXPECT_TRUE(contains(line, "365d")) << line;
  EXPECT_TRUE(contains(line, "key age 400d")) << line;
  EXPECT_FALSE(contains(due.output, "loose01")) << due.output;
  EXPECT_EQ(lines_of(due.output).back(),
            "1 of 4 devices due for rotation: keys older than 365d or certificates past 80% of "
            "their lifetime");
  EXPECT_EQ(snapshot(keys_dir()), before) << "keys due changes nothing";

  // A maximum age above every key's: nothing due, exit 0 (the timer's ExecCondition= passes).
  variables["PROVISION_KEY_MAX_AGE"] = "500d";
  const CommandResult none = run_agent("keys due", variables);
  EXPECT_EQ(none.exit_code, 0) << none.output;
  EXPECT_TRUE(starts_with(lines_of(none.output).back(), "0 of 4 devices due")) << none.output;
}

TEST_F(KeysCommandTest, ShowAgentPrintsTheAgentKeyForPinningAndNeverMakesOne) {
  const CommandResult missing = run_agent("keys show --agent", env());
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_TRUE(contains(missing.output, "no agent key yet")) << missing.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("agent_private.pem"))) << "show makes no key";

  const keystore::KeyPair agent_key = keystore::generate_key_pair(KeyType::rsa2048);
  write_file(dir.file("agent_private.pem"), agent_key.private_pem, 0600);
  const CommandResult shown = run_agent("keys show --agent", env());
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  EXPECT_EQ(line_starting(shown.output, "fingerprint:"),
            "fingerprint: " + keystore::fingerprint(agent_key.public_pem));
  EXPECT_TRUE(contains(shown.output, agent_key.public_pem)) << shown.output;
  EXPECT_EQ(run_agent("keys show good01 --agent", env()).exit_code, 78) << "one or the other";
}

// `check` against a real broker. The key store is sound unless a test breaks it.
class CheckCommandTest : public KeyStoreFixture {
 protected:
  std::map<std::string, std::string> env_for(int port) const {
    auto variables = env();
    variables["MQTT_PORT"] = std::to_string(port);
    return variables;
  }
};

TEST_F(CheckCommandTest, EverythingFinePrintsOnlyOkLinesAndExitsZero) {
  Broker broker;
  const CommandResult result = run_agent("check", env_for(broker.port()));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const std::string& line : lines_of(result.output)) {
    EXPECT_TRUE(starts_with(line, "OK   ")) << line;
  }
  const std::string broker_line = fmt::format("OK   broker 127.0.0.1:{} reachable", broker.port());
  EXPECT_TRUE(starts_with(line_starting(result.output, broker_line), broker_line));
  line_starting(result.output, "OK   configuration valid");
  line_starting(result.output, "OK   key store root " + keys_dir() + " (mode 0700");
  line_starting(result.output, "OK   key store modes and owners (4 devices)");
  line_starting(result.output, "OK   key pairs consistent (4 devices)");
  line_starting(result.output, "OK   no agent key yet in " + dir.path());
  line_starting(result.output, "OK   key ages: 0 certificate(s); 0 device(s) due for rotation");
  line_starting(result.output, "OK   plugin keygen ");
  line_starting(result.output, "OK   plugin revoke ");
  line_starting(result.output, "OK   system clock plausible");
}

// Key ages (SPEC section 5) are a task for the operator, not a broken set-up: an OK line that
// counts certificates, names the first to expire and points at `keys due` when any device is due.
TEST_F(CheckCommandTest, KeyAgesCountCertificatesAndDevicesDue) {
  Broker broker;
  age_key(path("alice/good01/sensor_private.pem"), 400);
  const std::string certificate = path("bob/mismatch01/sensor_cert.pem");
  const CommandResult made = run_command(
      "openssl req -x509 -new -key " + shell_quote(path("bob/mismatch01/sensor_private.pem")) +
      " -subj /CN=mismatch01 -days 30 -out " + shell_quote(certificate) +
      " && openssl x509 -noout -enddate -dateopt iso_8601 -in " + shell_quote(certificate));
  ASSERT_EQ(made.exit_code, 0) << made.output;
  ASSERT_GT(made.output.size(), 29u) << made.output;  // "notAfter=2027-01-01 10:00:00Z"
  const std::string not_after = made.output.substr(9, 10) + "T" + made.output.substr(20, 8) + "Z";
  auto variables = env_for(broker.port());
  variables["PROVISION_KEY_MAX_AGE"] = "365d";
  const CommandResult result = run_agent("check", variables);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  line_starting(result.output, "OK   key ages: 1 certificate(s), the first expiring " + not_after +
                                   "; 1 device(s) due for rotation (provision-agent keys due "
                                   "lists them)");
}

TEST_F(CheckCommandTest, BrokerDownIsAFailLineAndExitOne) {
  const int port = free_port();  // nothing listens there
  const auto started = std::chrono::steady_clock::now();
  const CommandResult result = run_agent("check", env_for(port));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 30s) << "the probe is bounded";
  EXPECT_EQ(result.exit_code, 1) << result.output;
  const std::string line =
      line_starting(result.output, fmt::format("FAIL broker 127.0.0.1:{}: ", port));
  EXPECT_TRUE(contains(line, "cannot reach")) << line;
  EXPECT_TRUE(contains(line, "; fix: ")) << line;
  // The other checks still run.
  line_starting(result.output, "OK   key pairs consistent");
}

TEST_F(CheckCommandTest, WrongCredentialsAreReportedAsSuch) {
  BrokerOptions options;
  options.user_password = {{"agent-user", "right-password"}};
  Broker broker(std::move(options));
  auto variables = env_for(broker.port());
  variables["MQTT_USER"] = "agent-user";
  variables["MQTT_PASSWORD"] = "wrong-password";
  const CommandResult wrong = run_agent("check", variables);
  EXPECT_EQ(wrong.exit_code, 1) << wrong.output;
  const std::string line =
      line_starting(wrong.output, fmt::format("FAIL broker 127.0.0.1:{}: ", broker.port()));
  EXPECT_TRUE(contains(line, "refused the credentials of user agent-user")) << line;
  EXPECT_TRUE(contains(line, "not authori")) << line;
  EXPECT_FALSE(contains(wrong.output, "wrong-password")) << "the password is never printed";

  variables["MQTT_PASSWORD"] = "right-password";
  const CommandResult right = run_agent("check", variables);
  EXPECT_EQ(right.exit_code, 0) << right.output;
  line_starting(right.output, fmt::format("OK   broker 127.0.0.1:{} reachable", broker.port()));
}

TEST_F(CheckCommandTest, TlsWithTheRightCaPassesAndWithAnotherCaFailsTheHandshake) {
  TempDir certificates;
  TempDir other_certificates;  // a CA of its own that never signed the broker's certificate
  BrokerOptions options;
  options.tls = Broker::make_tls_files(certificates);
  const std::string right_ca = options.tls->ca_cert;
  const std::string wrong_ca = Broker::make_tls_files(other_certificates).ca_cert;
  Broker broker(std::move(options));
  auto variables = env_for(broker.port());
  variables["MQTT_USE_TLS"] = "true";
  variables["MQTT_CA_CERTS"] = right_ca;

  const CommandResult right = run_agent("check", variables);
  EXPECT_EQ(right.exit_code, 0) << right.output;
  const std::string ok_line = fmt::format("OK   broker 127.0.0.1:{} reachable", broker.port());
  EXPECT_TRUE(contains(line_starting(right.output, ok_line), "TLS on")) << right.output;

  variables["MQTT_CA_CERTS"] = wrong_ca;
  const CommandResult wrong = run_agent("check", variables);
  EXPECT_EQ(wrong.exit_code, 1) << wrong.output;
  const std::string line =
      line_starting(wrong.output, fmt::format("FAIL broker 127.0.0.1:{}: ", broker.port()));
  EXPECT_TRUE(contains(line, "TLS handshake")) << line;
  EXPECT_TRUE(contains(line, "MQTT_CA_CERTS")) << line;
}

TEST_F(CheckCommandTest, LooseKeyStoreRootIsAFailLineWithTheChmod) {
  Broker broker;
  ::chmod(keys_dir().c_str(), 0777);
  const CommandResult result = run_agent("check", env_for(broker.port()));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  const std::string line = line_starting(result.output, "FAIL key store root " + keys_dir() + ": ");
  EXPECT_TRUE(contains(line, "world-writable")) << line;
  EXPECT_TRUE(contains(line, "; fix: chmod ")) << line;
}

TEST_F(CheckCommandTest, BrokenKeysAreFailLinesNamingTheirPaths) {
  Broker broker;
  break_store();
  const CommandResult result = run_agent("check", env_for(broker.port()));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  line_starting(result.output, "FAIL " + path("alice/corrupt01/sensor_private.pem") + ": ");
  line_starting(result.output, "FAIL " + path("bob/mismatch01/sensor_public.pem") + ": ");
  line_starting(result.output, "FAIL " + path("loose01/sensor_private.pem") + ": ");
}

TEST_F(CheckCommandTest, InvalidConfigurationIsAFailLine) {
  auto variables = env_for(1883);
  variables["MQTT_PORT"] = "abc";
  const CommandResult result = run_agent("check", variables);
  EXPECT_EQ(result.exit_code, 1) << result.output;
  const std::string line = line_starting(result.output, "FAIL configuration: ");
  EXPECT_TRUE(contains(line, "MQTT_PORT")) << line;
  EXPECT_TRUE(contains(line, "abc")) << line;
  line_starting(result.output, "OK   system clock plausible");
}

TEST(CheckClockTest, A1970ClockWithoutRtcIsImplausible) {
  const auto boot = std::chrono::system_clock::from_time_t(86400);  // 1970-01-02
  const std::optional<std::string> problem = clock_problem(boot);
  ASSERT_TRUE(problem);
  EXPECT_TRUE(contains(*problem, "1970-01-02")) << *problem;
  EXPECT_FALSE(clock_problem(std::chrono::system_clock::now())) << "the test machine's clock";
}

TEST(OperatorHelpTest, HelpWorksOnEveryCommand) {
  for (const std::string command :
       {"check", "keys", "keys list", "keys show", "keys verify", "keys due", "audit verify"}) {
    const CommandResult result = run_agent(command + " --help", {});
    EXPECT_EQ(result.exit_code, 0) << command << ":\n" << result.output;
    EXPECT_TRUE(contains(result.output, "Usage:")) << command << ":\n" << result.output;
  }
}

}  // namespace
}  // namespace pa::test
