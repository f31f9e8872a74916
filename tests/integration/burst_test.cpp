// A burst of requests for many devices (SPEC sections 3 and 5): every one answered, every device
// its own key.
#include <gtest/gtest.h>

#include <set>

#include <fmt/format.h>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

TEST(AgentBurst, ServesTwoHundredDevicesWithDistinctKeys) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_KEY_TYPE", "ec-p256"}, {"PROVISION_WORKERS", "2"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));

  constexpr int kDevices = 200;
  for (int i = 0; i < kDevices; ++i) {
    observer->publish(fmt::format("provision/burst{:03}/request", i),
                      fmt::format(R"({{"request_id":"burst-{}","user_id":"{}"}})", i, i % 4));
  }
  ASSERT_TRUE(observer->wait_count("provision/+/response", kDevices, 120s))
      << "only " << observer->messages("provision/+/response").size() << " of " << kDevices
      << " responses arrived";

  std::set<std::string> fingerprints;
  std::set<std::string> answered;
  for (const auto& message : observer->messages("provision/+/response")) {
    auto json = parse_json(message.payload);
    ASSERT_FALSE(json.HasParseError()) << message.payload;
    EXPECT_EQ(json_string(json, "status"), "ok") << message.payload;
    EXPECT_TRUE(answered.insert(json_string(json, "request_id")).second)
        << "answered twice: " << message.payload;
    fingerprints.insert(json_string(json, "fingerprint"));
  }
  EXPECT_EQ(answered.size(), static_cast<std::size_t>(kDevices));
  EXPECT_EQ(fingerprints.size(), static_cast<std::size_t>(kDevices)) << "duplicate keys";

  std::set<std::string> public_keys;
  for (int i = 0; i < kDevices; ++i) {
    const std::string folder =
        agent.device_dir(fmt::format("burst{:03}", i), std::to_string(i % 4));
    EXPECT_EQ(file_mode(folder + "/sensor_private.pem"), 0600) << folder;
    public_keys.insert(read_file(folder + "/sensor_public.pem"));
  }
  EXPECT_EQ(public_keys.size(), static_cast<std::size_t>(kDevices)) << "duplicate key files";
  EXPECT_TRUE(observer->wait_count("keys/+/public", kDevices, 30s));
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace pa::test
