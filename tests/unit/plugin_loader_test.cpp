// Plugin loader (SPEC section 6): a good plugin, a wrong ABI version, a missing symbol, a failing
// init, a duplicate action, loose permissions; and the bundled keygen/revoke plugins driven
// through the real host table against a real key store.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "config/config.hpp"
#include "dispatch/host.hpp"
#include "dispatch/plugin_loader.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

namespace fs = std::filesystem;

// A plugin folder holding copies of the named fixture plugins (tests/fixtures); a path given as
// "source=name.so" is copied under that name (plugins load in name order).
std::string plugin_folder(const test::TempDir& dir, const std::vector<std::string>& paths) {
  const fs::path folder = fs::path(dir.path()) / "plugins";
  fs::create_directory(folder);
  fs::permissions(folder, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
  for (const auto& path : paths) {
    const auto equals = path.find('=');
    const fs::path source = path.substr(0, equals);
    const fs::path name =
        equals == std::string::npos ? source.filename() : fs::path(path.substr(equals + 1));
    fs::copy_file(source, folder / name);
  }
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
    services.publish = [this](const std::string& topic, const std::string& payload,
                              bool retain) -> std::optional<int> {
      std::lock_guard<std::mutex> lock(mutex);
      published.push_back({topic, payload, retain});
      return static_cast<int>(published.size());
    };
  }
  plugin::PluginSet load(const std::string& folder) {
    config.plugin_dir = folder;
    return plugin::PluginSet::load(config, services);
  }
  plugin::PluginSet load(const std::vector<std::string>& paths) {
    return load(plugin_folder(dir, paths));
  }
};

std::string load_error(HostFixture& f, const std::vector<std::string>& paths) {
  try {
    f.load(paths);
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "no error";
}

TEST(PluginLoader, LoadsAGoodPluginWithItsActionsAndOptions) {
  HostFixture f;
  auto set = f.load(std::vector<std::string>{fixture("good")});
  ASSERT_EQ(set.plugins().size(), 1u);
  EXPECT_TRUE(set.skipped().empty());
  const plugin::Plugin* plugin = set.find("fixture_action");
  ASSERT_NE(plugin, nullptr);
  EXPECT_EQ(plugin->name, "fixture");
  EXPECT_EQ(plugin->version, "0.0.1");
  EXPECT_EQ(plugin->description, "loader test fixture");
  ASSERT_EQ(plugin->actions.size(), 1u);
  EXPECT_EQ(plugin->actions[0].aliases, std::vector<std::string>{"fixture_alias"});
  EXPECT_TRUE(plugin->actions[0].publishes_key());
  EXPECT_FALSE(plugin->actions[0].destructive(true));
  // Aliases resolve through the plugins' table; unknown names pass unchanged.
  EXPECT_EQ(set.canonical("fixture_alias"), "fixture_action");
  EXPECT_EQ(set.canonical("nothing"), "nothing");
  EXPECT_EQ(set.action("fixture_alias"), &plugin->actions[0]);
  EXPECT_EQ(set.find(kActionGenerate), nullptr);
  // Declared options with their defaults, under PROVISION_PLUGIN_FIXTURE_*.
  ASSERT_EQ(plugin->options.size(), 3u);
  EXPECT_EQ(plugin->options[0].variable, "PROVISION_PLUGIN_FIXTURE_LEVEL");
  EXPECT_EQ(plugin->option_values.at("LEVEL"), "low");
  EXPECT_EQ(plugin->option_values.at("COUNT"), "3");
  EXPECT_EQ(plugin->option_values.at("ENABLED"), "true");
  EXPECT_EQ(plugin::option_variable("my-plugin", "X"), "PROVISION_PLUGIN_MY_PLUGIN_X");
}

TEST(PluginLoader, OptionsComeFromTheConfigurationAndAreValidated) {
  HostFixture f;
  f.config.plugin_entries["PROVISION_PLUGIN_FIXTURE_LEVEL"] = {"high", ConfigSource::env_file,
                                                               true};
  f.config.plugin_entries["PROVISION_PLUGIN_FIXTURE_ENABLED"] = {"off", ConfigSource::environment,
                                                                 true};
  auto set = f.load(std::vector<std::string>{fixture("good")});
  ASSERT_EQ(set.plugins().size(), 1u);
  const plugin::Plugin& plugin = *set.plugins()[0];
  EXPECT_EQ(plugin.option_values.at("LEVEL"), "high");
  EXPECT_EQ(plugin.option_values.at("ENABLED"), "false");
  // The plugin reads them through its own handle.
  EXPECT_STREQ(plugin.host->table()->option_get(plugin.host->table()->handle, "LEVEL"), "high");
  EXPECT_EQ(plugin.host->table()->option_get(plugin.host->table()->handle, "NONE"), nullptr);

  // A bad value stops start-up naming the variable and the value (exit 78).
  for (const auto& [name, value, expected] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"PROVISION_PLUGIN_FIXTURE_COUNT", "11", "expected an integer 1..10"},
           {"PROVISION_PLUGIN_FIXTURE_COUNT", "two", "expected an integer 1..10"},
           {"PROVISION_PLUGIN_FIXTURE_LEVEL", "medium", "expected one of low, high"},
           {"PROVISION_PLUGIN_FIXTURE_ENABLED", "maybe", "expected true/false"}}) {
    HostFixture bad;
    bad.config.plugin_entries[name] = {value, ConfigSource::environment, true};
    const std::string error = load_error(bad, {fixture("good")});
    EXPECT_NE(error.find("invalid " + name + "=\"" + value + "\": " + expected), std::string::npos)
        << error;
  }
  // A plugin whose own default breaks its own range is refused too, saying so.
  HostFixture defaults;
  const std::string error = load_error(defaults, {fixture("bad_default")});
  EXPECT_NE(error.find("PROVISION_PLUGIN_FIXTURE_COUNT=\"99\""), std::string::npos) << error;
  EXPECT_NE(error.find("the plugin's own default"), std::string::npos) << error;
}

TEST(PluginLoader, ActionsRegisteredInInitJoinTheTable) {
  HostFixture f;
  auto set = f.load(std::vector<std::string>{fixture("registers"), PA_KEYGEN_PLUGIN});
  ASSERT_EQ(set.plugins().size(), 2u);
  const plugin::ActionSpec* found = set.action("found_at_init");
  ASSERT_NE(found, nullptr);
  EXPECT_TRUE(found->destructive(false));
  EXPECT_EQ(set.find("found_at_init")->name, "fixture");
  // describe() reads descriptors without init(): only the declared actions.
  auto described = plugin::PluginSet::describe(f.config);
  EXPECT_EQ(described.action("found_at_init"), nullptr);
  EXPECT_NE(described.action("fixture_action"), nullptr);
  EXPECT_FALSE(described.plugins()[0]->initialised);
}

TEST(PluginLoader, RegisteringOutsideInitIsRefused) {
  HostFixture f;
  auto set = f.load(std::vector<std::string>{fixture("registers")});
  ASSERT_EQ(set.plugins().size(), 1u);
  const plugin::Plugin& plugin = *set.plugins()[0];
  Request request;
  request.device_id = "pH01";
  request.action = "found_at_init";
  request.json = "{}";
  pa_call call;
  call.services = &f.services;
  call.request = &request;
  prepare_call(call, "ec-p256");
  ASSERT_EQ(plugin.descriptor->handle(plugin.state, &call, &call.c_request), PA_OK);
  auto status =
      reinterpret_cast<int (*)()>(plugin.library.symbol("fixture_register_status_in_handle"));
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(status(), PA_ERR_UNSUPPORTED);
  EXPECT_EQ(set.action("too_late"), nullptr);
}

TEST(PluginLoader, ARegisteredActionAnotherPluginServesStopsStartUpNamingBoth) {
  HostFixture f;
  // keygen loads first (name order), then the fixture registers "update" in its init().
  const std::string error =
      load_error(f, {PA_KEYGEN_PLUGIN, fixture("registers_taken") + "=z_fixture.so"});
  EXPECT_NE(error.find("keygen.so"), std::string::npos) << error;
  EXPECT_NE(error.find("z_fixture.so"), std::string::npos) << error;
  EXPECT_NE(error.find("\"update\""), std::string::npos) << error;
}

TEST(PluginLoader, SkipsWrongAbiVersionWithAClearReason) {
  HostFixture f;
  auto set = f.load(std::vector<std::string>{fixture("wrong_abi")});
  EXPECT_TRUE(set.plugins().empty());
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].path.find("fixture_wrong_abi.so"), std::string::npos);
  EXPECT_NE(set.skipped()[0].reason.find("ABI version 99"), std::string::npos)
      << set.skipped()[0].reason;
}

TEST(PluginLoader, SkipsAMissingEntrySymbol) {
  HostFixture f;
  auto set = f.load(std::vector<std::string>{fixture("missing_symbol")});
  EXPECT_TRUE(set.plugins().empty());
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("missing symbol pa_plugin_describe"), std::string::npos)
      << set.skipped()[0].reason;
}

TEST(PluginLoader, SaysWhenAPluginWasBuiltAgainstThePreReleaseHeader) {
  HostFixture f;
  auto set = f.load(std::vector<std::string>{fixture("pre_release")});
  EXPECT_TRUE(set.plugins().empty());
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("pre-release plugin ABI"), std::string::npos)
      << set.skipped()[0].reason;
  EXPECT_NE(set.skipped()[0].reason.find("rebuild it"), std::string::npos);
}

TEST(PluginLoader, SkipsAFailingInitNamingTheStatus) {
  HostFixture f;
  auto set = f.load(std::vector<std::string>{fixture("failing_init"), PA_KEYGEN_PLUGIN});
  ASSERT_EQ(set.plugins().size(), 1u);  // keygen still loads
  EXPECT_EQ(set.plugins()[0]->name, "keygen");
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("init failed with PA_ERR_FAILED (6)"), std::string::npos)
      << set.skipped()[0].reason;
  EXPECT_EQ(set.find("fixture_action"), nullptr);
}

TEST(PluginStatus, EveryStatusHasAName) {
  EXPECT_STREQ(pa_status_name(PA_OK), "PA_OK");
  EXPECT_STREQ(pa_status_name(PA_ERR_STORAGE), "PA_ERR_STORAGE");
  EXPECT_STREQ(pa_status_name(PA_ERR_QUOTA), "PA_ERR_QUOTA");
  EXPECT_STREQ(pa_status_name(PA_ERR_NO_MEMORY), "PA_ERR_NO_MEMORY");
  EXPECT_STREQ(pa_status_name(42), "PA_ERR_UNKNOWN");
  EXPECT_EQ(error_code_for_status(PA_ERR_QUOTA), ErrorCode::quota_exceeded);
  EXPECT_EQ(error_code_for_status(PA_ERR_NOT_FOUND), ErrorCode::not_found);
}

TEST(PluginLoader, SkipsAFileThatIsNotAPlugin) {
  HostFixture f;
  const std::string folder = plugin_folder(f.dir, {});
  test::write_file(folder + "/notes.so", "not an ELF file", 0644);
  auto set = f.load(folder);
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("cannot load"), std::string::npos);
}

TEST(PluginLoader, DuplicateActionStopsStartUpNamingBoth) {
  HostFixture f;
  const std::string folder = plugin_folder(f.dir, {fixture("good"), fixture("duplicate")});
  try {
    f.load(folder);
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
  auto set = f.load(folder);
  ASSERT_EQ(set.skipped().size(), 1u);
  EXPECT_NE(set.skipped()[0].reason.find("chmod"), std::string::npos) << set.skipped()[0].reason;
  EXPECT_EQ(set.plugins().size(), 1u);

  ASSERT_EQ(chmod(folder.c_str(), 0777), 0);
  try {
    f.load(folder);
    FAIL() << "a world-writable plugin folder must be refused";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("PROVISION_PLUGIN_DIR"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("chmod"), std::string::npos) << error.what();
  }
}

TEST(PluginLoader, MissingFolderIsAConfigError) {
  HostFixture f;
  EXPECT_THROW(f.load(f.dir.file("nowhere")), ConfigError);
}

// The bundled plugins through the real host table.
class BundledPlugins : public ::testing::Test {
 protected:
  void SetUp() override {
    set_ = f_.load(std::vector<std::string>{PA_KEYGEN_PLUGIN, PA_REVOKE_PLUGIN});
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
  EXPECT_NE(set_.find("publish_key"), nullptr);
  // Their properties come from their descriptors, not from the core.
  EXPECT_TRUE(set_.action("rotate")->destructive(false));
  EXPECT_TRUE(set_.action("delete")->destructive(false));
  EXPECT_FALSE(set_.action("generate")->destructive(false));
  EXPECT_TRUE(set_.action("generate")->destructive(true));
  EXPECT_TRUE(set_.action("publish_key")->publishes_key());
  EXPECT_FALSE(set_.action("delete")->publishes_key());
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
  EXPECT_EQ(run(request("publish_key"), call), PA_ERR_NOT_FOUND);
  ASSERT_TRUE(call.error);
  EXPECT_EQ(call.error->code, ErrorCode::not_found);
  EXPECT_TRUE(f_.published.empty());
}

TEST_F(BundledPlugins, ConfigLookupHidesSecrets) {
  f_.config.entries["MQTT_HOST"] = {"broker.example", ConfigSource::environment, true};
  f_.config.entries["MQTT_PASSWORD"] = {"s3cret", ConfigSource::environment, true};
  const pa_host* host = set_.plugins()[0]->host->table();
  ASSERT_NE(host->config_get(host->handle, "MQTT_HOST"), nullptr);
  EXPECT_STREQ(host->config_get(host->handle, "MQTT_HOST"), "broker.example");
  EXPECT_EQ(host->config_get(host->handle, "MQTT_PASSWORD"), nullptr);
  EXPECT_EQ(host->config_get(host->handle, "NO_SUCH_VARIABLE"), nullptr);
}

}  // namespace
}  // namespace pa
