// Plugin loader (SPEC section 6): a good plugin, a wrong ABI version, a missing symbol, a failing
// init, a duplicate action, loose permissions; and the bundled keygen/revoke plugins driven
// through the real host table against a real key store.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "config.hpp"
#include "host.hpp"
#include "plugin_loader.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

namespace fs = std::filesystem;

// A plugin folder holding copies of the named fixture plugins (tests/fixtures).
std::string plugin_folder(const test::TempDir& dir, const std::vector<std::string>& paths) {
  const fs::path folder = fs::path(dir.path()) / "plugins";
  fs::create_directory(folder);
  fs::permissions(folder, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
  for (const auto& path : paths) fs::copy_file(path, folder / fs::path(path).filename());
  return folder.string();
}

std::string fixture(const std::string& kind) {
  return std::string(PA_FIXTURE_PLUGIN_DIR) + "/fixture_" + kind + ".so";
}

struct Published {
  std::string topic;
  std::string payload;
  bool retain;
};

// The real host table over a real key store, with publishing captured.
struct HostFixture {
  test::TempDir dir;
  Config config;
  std::optional<keystore::KeyStore> store;
  HostServices services;
  std::mutex mutex;
  std::vector<Published> published;

  HostFixture() {
    config.keys_dir = dir.file("sensor_keys");
    config.key_type = keystore::KeyType::ec_p256;
    config.mqtt_client_id = "agent-under-test";
    store.emplace(config.keys_dir);
    services.config = &config;
    services.store = &*store;
    services.agent_id = config.mqtt_client_id;
    services.publish = [this](const std::string& topic, const std::string& payload, bool retain) {
      std::lock_guard<std::mutex> lock(mutex);
      published.push_back({topic, payload, retain});
      return true;
    };
  }
  const pa_host* host() { return host_table(services); }
};

TEST(PluginLoader, LoadsAGoodPlugin) {
  HostFixture f;
  auto set = plugin::PluginSet::load(plugin_folder(f.dir, {fixture("good")}), f.host());
  ASSERT_EQ(set.plugins().size(), 1u);
  EXPECT_TRUE(set.skipped().empty());
  const plugin::Plugin* plugin = set.find("fixture_action");
  ASSERT_NE(plugin, nullptr);
  EXPECT_EQ(plugin->name, "fixture");
  EXPECT_EQ(plugin->version, "0.0.1");
  EXPECT_EQ(plugin->actions, std::vector<std::string>{"fixture_action"});
  EXPECT_EQ(set.find(kActionGenerate), nullptr);
}

TEST(PluginLoader, SkipsWrongAbiVersionWithAClearReason) {
  HostFixture f;
  auto set = plugin::PluginSet::load(plugin_folder(f.dir, {fixture("wrong_abi")}), f.host());
  EXPECT_TRUE(set.plugins().empty());
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].path.find("fixture_wrong_abi.so"), std::string::npos);
  EXPECT_NE(set.skipped()[0].reason.find("ABI version 99"), std::string::npos)
      << set.skipped()[0].reason;
}

TEST(PluginLoader, SkipsAMissingEntrySymbol) {
  HostFixture f;
  auto set = plugin::PluginSet::load(plugin_folder(f.dir, {fixture("missing_symbol")}), f.host());
  EXPECT_TRUE(set.plugins().empty());
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("missing symbol pa_plugin_entry"), std::string::npos)
      << set.skipped()[0].reason;
}

TEST(PluginLoader, SkipsAFailingInit) {
  HostFixture f;
  auto set = plugin::PluginSet::load(
      plugin_folder(f.dir, {fixture("failing_init"), PA_KEYGEN_PLUGIN}), f.host());
  ASSERT_EQ(set.plugins().size(), 1u);  // keygen still loads
  EXPECT_EQ(set.plugins()[0]->name, "keygen");
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("init failed"), std::string::npos);
  EXPECT_EQ(set.find("fixture_action"), nullptr);
}

TEST(PluginLoader, SkipsAFileThatIsNotAPlugin) {
  HostFixture f;
  const std::string folder = plugin_folder(f.dir, {});
  test::write_file(folder + "/notes.so", "not an ELF file", 0644);
  auto set = plugin::PluginSet::load(folder, f.host());
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("cannot load"), std::string::npos);
}

TEST(PluginLoader, DuplicateActionStopsStartUpNamingBoth) {
  HostFixture f;
  const std::string folder = plugin_folder(f.dir, {fixture("good"), fixture("duplicate")});
  try {
    plugin::PluginSet::load(folder, f.host());
    FAIL() << "a duplicate action must stop start-up";
  } catch (const ConfigError& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("fixture_duplicate.so"), std::string::npos) << what;
    EXPECT_NE(what.find("fixture_good.so"), std::string::npos) << what;
    EXPECT_NE(what.find("fixture_action"), std::string::npos) << what;
  }
}

TEST(PluginLoader, RefusesLoosePermissions) {
  HostFixture f;
  const std::string folder = plugin_folder(f.dir, {fixture("good"), PA_KEYGEN_PLUGIN});
  ASSERT_EQ(chmod((folder + "/fixture_good.so").c_str(), 0666), 0);
  auto set = plugin::PluginSet::load(folder, f.host());
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("chmod"), std::string::npos) << set.skipped()[0].reason;
  EXPECT_EQ(set.plugins().size(), 1u);

  ASSERT_EQ(chmod(folder.c_str(), 0777), 0);
  try {
    plugin::PluginSet::load(folder, f.host());
    FAIL() << "a world-writable plugin folder must be refused";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("PROVISION_PLUGIN_DIR"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("chmod"), std::string::npos) << error.what();
  }
}

TEST(PluginLoader, MissingFolderIsAConfigError) {
  HostFixture f;
  EXPECT_THROW(plugin::PluginSet::load(f.dir.file("nowhere"), f.host()), ConfigError);
}

// The bundled plugins through the real host table.
class BundledPlugins : public ::testing::Test {
 protected:
  void SetUp() override {
    set_ = plugin::PluginSet::load(plugin_folder(f_.dir, {PA_KEYGEN_PLUGIN, PA_REVOKE_PLUGIN}),
                                   f_.host());
  }

  // Runs one action through the plugin that serves it; returns the status and the call.
  int run(Request request, pa_call& call) {
    request_ = std::move(request);
    call.services = &f_.services;
    call.request = &request_;
    key_type_ = request_.key_type.value_or("ec-p256");
    prepare_call(call, key_type_);
    const plugin::Plugin* plugin = set_.find(request_.action);
    EXPECT_NE(plugin, nullptr) << request_.action;
    return plugin->descriptor->handle(plugin->state, &call, &call.c_request);
  }

  static Request request(const std::string& action, bool force = false) {
    Request r;
    r.device_id = "pH01";
    r.user_id = "5";
    r.action = action;
    r.force = force;
    r.json = "{}";
    return r;
  }

  std::string private_key() {
    return test::read_file(f_.config.keys_dir + "/5/pH01/sensor_private.pem");
  }

  HostFixture f_;
  plugin::PluginSet set_;
  Request request_;
  std::string key_type_;
};

TEST_F(BundledPlugins, ServeTheSpecActions) {
  EXPECT_NE(set_.find(kActionGenerate), nullptr);
  EXPECT_NE(set_.find(kActionUpdate), nullptr);
  EXPECT_NE(set_.find(kActionPublishKey), nullptr);
  EXPECT_NE(set_.find(kActionDelete), nullptr);
  EXPECT_EQ(set_.find(kActionGenerate)->name, "keygen");
  EXPECT_EQ(set_.find(kActionDelete)->name, "revoke");
}

TEST_F(BundledPlugins, GenerateIsIdempotentUnlessForced) {
  pa_call first;
  ASSERT_EQ(run(request(kActionGenerate), first), PA_OK);
  ASSERT_TRUE(first.fingerprint);
  const std::string key = private_key();
  EXPECT_EQ(test::file_mode(f_.config.keys_dir + "/5/pH01/sensor_private.pem"), 0600);
  ASSERT_EQ(f_.published.size(), 1u);
  EXPECT_EQ(f_.published[0].topic, "keys/pH01/public");
  EXPECT_TRUE(f_.published[0].retain);
  auto message = test::parse_json(f_.published[0].payload);
  EXPECT_STREQ(message["key_type"].GetString(), "ec-p256");
  EXPECT_STREQ(message["user_id"].GetString(), "5");
  EXPECT_STREQ(message["agent_id"].GetString(), "agent-under-test");
  EXPECT_EQ(std::string(message["fingerprint"].GetString()), *first.fingerprint);

  pa_call again;
  ASSERT_EQ(run(request(kActionGenerate), again), PA_OK);
  EXPECT_EQ(again.fingerprint, first.fingerprint);
  EXPECT_EQ(private_key(), key);

  pa_call forced;
  ASSERT_EQ(run(request(kActionGenerate, true), forced), PA_OK);
  EXPECT_NE(forced.fingerprint, first.fingerprint);
  EXPECT_NE(private_key(), key);
}

TEST_F(BundledPlugins, UpdateKeepsOneBackupAndDeleteClearsTheRetainedKey) {
  pa_call generate;
  ASSERT_EQ(run(request(kActionGenerate), generate), PA_OK);
  const std::string old_key = private_key();
  pa_call update;
  ASSERT_EQ(run(request(kActionUpdate), update), PA_OK);
  EXPECT_NE(update.fingerprint, generate.fingerprint);
  EXPECT_EQ(test::read_file(f_.config.keys_dir + "/5/pH01/sensor_private.prev.pem"), old_key);

  pa_call remove;
  ASSERT_EQ(run(request(kActionDelete), remove), PA_OK);
  EXPECT_FALSE(test::file_exists(f_.config.keys_dir + "/5/pH01/sensor_private.pem"));
  EXPECT_FALSE(test::file_exists(f_.config.keys_dir + "/5/pH01/sensor_private.prev.pem"));
  ASSERT_FALSE(f_.published.empty());
  EXPECT_EQ(f_.published.back().topic, "keys/pH01/public");
  EXPECT_EQ(f_.published.back().payload, "");
  EXPECT_TRUE(f_.published.back().retain);

  pa_call again;
  EXPECT_EQ(run(request(kActionDelete), again), PA_ERR_NOT_FOUND);
  ASSERT_TRUE(again.error);
  EXPECT_EQ(again.error->code, ErrorCode::not_found);
}

TEST_F(BundledPlugins, PublishKeyWithoutKeysIsNotFound) {
  pa_call call;
  EXPECT_EQ(run(request(kActionPublishKey), call), PA_ERR_NOT_FOUND);
  ASSERT_TRUE(call.error);
  EXPECT_EQ(call.error->code, ErrorCode::not_found);
  EXPECT_TRUE(f_.published.empty());
}

TEST_F(BundledPlugins, ConfigLookupHidesSecrets) {
  f_.config.entries["MQTT_HOST"] = {"broker.example", ConfigSource::environment, true};
  f_.config.entries["MQTT_PASSWORD"] = {"s3cret", ConfigSource::environment, true};
  const pa_host* host = f_.host();
  ASSERT_NE(host->config_get("MQTT_HOST"), nullptr);
  EXPECT_STREQ(host->config_get("MQTT_HOST"), "broker.example");
  EXPECT_EQ(host->config_get("MQTT_PASSWORD"), nullptr);
  EXPECT_EQ(host->config_get("NO_SUCH_VARIABLE"), nullptr);
}

}  // namespace
}  // namespace pa
