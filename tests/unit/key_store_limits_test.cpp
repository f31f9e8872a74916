// SPEC sections 2, 3.1 and 3.5: legacy device folders and user folders share the root and never
// become one folder; PROVISION_MAX_DEVICES bounds the pairs held; a delete with a user also takes
// the legacy folder's keys; workers store concurrently.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "key_store_support.hpp"
#include "keystore/key_store.hpp"
#include "test_support.hpp"

namespace pa::keystore {
namespace {

namespace fs = std::filesystem;
using store_test::names_in;

const std::optional<std::string> kNoUser;

class KeyStoreLimits : public ::testing::Test {
 protected:
  std::vector<std::string> tree() const { return test::list_tree(root_.string()); }

  test::TempDir tmp_;
  fs::path root_ = fs::path(tmp_.path()) / "keys";
  KeyPair pair_ = generate_key_pair(KeyType::ec_p256);
};

TEST_F(KeyStoreLimits, LegacyDeviceNamedLikeAUserFolder) {
  KeyStore store(root_);
  store.store(std::string("D"), "dev", pair_, false);
  const std::vector<std::string> before = tree();
  try {
    store.store(kNoUser, "D", pair_, false);
    FAIL() << "a legacy device was stored in a user's folder";
  } catch (const CollisionError& e) {
    EXPECT_EQ(std::string(e.what()),
              "key store collision: " + (root_ / "D").string() +
                  " is the folder of user D (it holds the device folder dev), so it cannot also "
                  "be the legacy folder of device D; nothing was written");
  }
  EXPECT_EQ(tree(), before);
  EXPECT_EQ(store.device_count(), 1u);
  EXPECT_FALSE(store.has_keys(kNoUser, "D"));
}

TEST_F(KeyStoreLimits, UserNamedLikeALegacyDeviceFolder) {
  KeyStore store(root_);
  store.store(kNoUser, "U", pair_, false);
  const std::vector<std::string> before = tree();
  try {
    store.store(std::string("U"), "dev", pair_, true);
    FAIL() << "a user's device was stored in a legacy device folder";
  } catch (const CollisionError& e) {
    EXPECT_EQ(std::string(e.what()),
              "key store collision: " + (root_ / "U").string() +
                  " is the legacy folder of device U (it holds sensor_private.pem), so it cannot "
                  "also be the folder of user U; nothing was written");
  }
  EXPECT_EQ(tree(), before);
  EXPECT_EQ(store.device_count(), 1u);
  // A collision is a StoreError like any other for callers that do not tell them apart.
  EXPECT_THROW(store.store(std::string("U"), "dev", pair_, false), StoreError);
}

TEST_F(KeyStoreLimits, NoCollisionWithoutTheOtherKind) {
  KeyStore store(root_);
  ASSERT_EQ(::mkdir((root_ / "empty").c_str(), 0700), 0);
  store.store(std::string("empty"), "dev", pair_, false);  // an empty folder is either
  ASSERT_EQ(::mkdir((root_ / "empty2").c_str(), 0700), 0);
  store.store(kNoUser, "empty2", pair_, false);
  // Another user's device of that name, or a user of that name holding the device: no collision.
  store.store(std::string("alice"), "empty2", pair_, false);
  store.store(std::string("empty2x"), "empty2x", pair_, false);
  EXPECT_EQ(store.device_count(), 4u);
}

TEST_F(KeyStoreLimits, StoreFileNamesAreNotIdentifiers) {
  KeyStore store(root_);
  for (const char* name : kDeviceFiles) {
    EXPECT_THROW(store.store(kNoUser, name, pair_, false), std::invalid_argument) << name;
    EXPECT_THROW(store.store(std::string(name), "dev", pair_, false), std::invalid_argument)
        << name;
    EXPECT_THROW(store.store(std::string("u"), name, pair_, false), std::invalid_argument) << name;
  }
  EXPECT_TRUE(tree().empty());
  // The original server's longest ids, and ours.
  const std::string id100(100, 'x');
  const std::string id128 = "9" + std::string(127, 'z');
  store.store(std::string(id128), id100, pair_, false);
  store.store(kNoUser, id100, pair_, false);
  EXPECT_TRUE(store.has_keys(id128, id100));
  EXPECT_TRUE(fs::exists(root_ / id128 / id100 / "sensor_private.pem"));
  EXPECT_TRUE(store.has_keys(kNoUser, id100));
  EXPECT_TRUE(fs::exists(root_ / id100 / "sensor_private.pem"));
}

TEST_F(KeyStoreLimits, QuotaBoundary) {
  KeyStore store(root_, StoreOptions{std::nullopt, 3});
  EXPECT_EQ(store.max_devices(), 3u);
  store.store(std::string("u"), "a", pair_, false);
  store.store(std::string("v"), "a", pair_, false);  // another user's device is another pair
  store.store(kNoUser, "c", pair_, false);
  EXPECT_EQ(store.device_count(), 3u);

  const std::vector<std::string> before = tree();
  try {
    store.store(std::string("u"), "d", pair_, false);
    FAIL() << "a fourth pair was stored under a limit of 3";
  } catch (const QuotaError& e) {
    EXPECT_EQ(e.held(), 3u);
    EXPECT_EQ(e.limit(), 3u);
    EXPECT_EQ(std::string(e.what()),
              "the key store already holds 3 key pairs, its limit of 3: no pair for another "
              "device can be added");
  }
  EXPECT_THROW(store.store(std::string("new"), "d", pair_, false), QuotaError);
  EXPECT_THROW(store.store(kNoUser, "d", pair_, false), QuotaError);
  EXPECT_EQ(tree(), before) << "a refused pair must leave no folder behind";

  // Replacing and rotating are always allowed.
  const KeyPair next = generate_key_pair(KeyType::ec_p256);
  store.store(std::string("u"), "a", next, true);
  store.store(kNoUser, "c", next, false);
  EXPECT_EQ(store.load(std::string("u"), "a")->fingerprint, fingerprint(next.public_pem));
  EXPECT_EQ(store.device_count(), 3u);

  // A freed slot can be taken again.
  EXPECT_TRUE(store.remove(std::string("v"), "a"));
  EXPECT_EQ(store.device_count(), 2u);
  store.store(std::string("u"), "d", pair_, false);
  EXPECT_EQ(store.device_count(), 3u);

  // The count is taken from the disk at open: the lock file, a public key alone and a folder
  // without keys do not count.
  const InstanceLock lock = store.lock_instance();
  ASSERT_EQ(::mkdir((root_ / "u" / "nokeys").c_str(), 0700), 0);
  test::write_file((root_ / "u" / "nokeys" / "sensor_public.pem").string(), pair_.public_pem);
  KeyStore reopened(root_, StoreOptions{std::nullopt, 2});
  EXPECT_EQ(reopened.device_count(), 3u);
  // Over the limit after it was lowered: replacing still works, adding does not.
  reopened.store(std::string("u"), "d", next, true);
  EXPECT_THROW(reopened.store(std::string("u"), "nokeys", pair_, false), QuotaError);
  EXPECT_FALSE(fs::exists(root_ / "u" / "nokeys" / "sensor_private.pem"));
}

TEST_F(KeyStoreLimits, QuotaHoldsUnderConcurrentStores) {
  KeyStore store(root_, StoreOptions{std::nullopt, 10});
  std::atomic<int> stored{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; i < 5; ++i) {
        try {
          store.store(std::string("u"), "w" + std::to_string(w) + "d" + std::to_string(i), pair_,
                      false);
          stored.fetch_add(1);
        } catch (const QuotaError&) {
          refused.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  EXPECT_EQ(stored.load(), 10);
  EXPECT_EQ(refused.load(), 10);
  EXPECT_EQ(names_in(root_ / "u").size(), 10u);
  EXPECT_EQ(store.device_count(), 10u);
  EXPECT_EQ(KeyStore(root_).device_count(), 10u);
}

TEST_F(KeyStoreLimits, ConcurrentStoresForOneUser) {
  KeyStore store(root_);
  std::vector<std::thread> workers;
  std::atomic<int> failures{0};
  for (int w = 0; w < 6; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; i < 8; ++i) {
        try {
          // Every worker races to create the user folder first.
          store.store(std::string("shared"), "w" + std::to_string(w) + "d" + std::to_string(i),
                      pair_, i % 2 == 1);
        } catch (const std::exception&) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(names_in(root_ / "shared").size(), 48u);
  EXPECT_EQ(store.device_count(), 48u);
  EXPECT_EQ(test::file_mode((root_ / "shared").string()), 0700);
  for (const std::string& device : names_in(root_ / "shared")) {
    EXPECT_EQ(names_in(root_ / "shared" / device),
              (std::set<std::string>{"sensor_private.pem", "sensor_public.pem"}))
        << device;
  }
}

// A legacy device D and user D's device race for <root>/D: exactly one wins, every time.
TEST_F(KeyStoreLimits, ConcurrentCollisionHasOneWinner) {
  for (int round = 0; round < 20; ++round) {
    test::TempDir tmp;
    const fs::path root = fs::path(tmp.path()) / "keys";
    KeyStore store(root);
    std::atomic<int> collisions{0};
    auto attempt = [&](const std::optional<std::string>& user, const std::string& device) {
      try {
        store.store(user, device, pair_, false);
      } catch (const CollisionError&) {
        collisions.fetch_add(1);
      }
    };
    std::thread legacy(attempt, std::nullopt, "X");
    std::thread owned(attempt, std::string("X"), "dev");
    legacy.join();
    owned.join();
    EXPECT_EQ(collisions.load(), 1) << "round " << round;
    const std::set<std::string> names = names_in(root / "X");
    const bool is_legacy =
        names == std::set<std::string>{"sensor_private.pem", "sensor_public.pem"};
    const bool is_user = names == std::set<std::string>{"dev"};
    EXPECT_TRUE(is_legacy || is_user) << "round " << round;
    EXPECT_EQ(store.device_count(), 1u);
  }
}

TEST_F(KeyStoreLimits, DeleteWithAUserAlsoTakesTheLegacyKeys) {
  KeyStore store(root_);
  store.store(std::string("u"), "D", pair_, false);
  store.store(kNoUser, "D", pair_, false);
  store.store(kNoUser, "E", pair_, false);
  store.store(std::string("u"), "E", pair_, true);
  EXPECT_EQ(store.device_count(), 4u);

  // LegacyKeys::keep (the default) leaves <root>/D.
  EXPECT_TRUE(store.remove(std::string("u"), "E"));
  EXPECT_TRUE(store.has_keys(kNoUser, "E"));
  EXPECT_TRUE(store.remove(std::string("u"), "D", LegacyKeys::remove));
  EXPECT_FALSE(fs::exists(root_ / "u" / "D"));
  EXPECT_FALSE(fs::exists(root_ / "D"));
  EXPECT_EQ(store.device_count(), 1u);
  // With only the legacy keys left, the delete still finds them.
  EXPECT_TRUE(store.remove(std::string("nobody"), "E", LegacyKeys::remove));
  EXPECT_FALSE(fs::exists(root_ / "E"));
  EXPECT_FALSE(store.remove(std::string("u"), "E", LegacyKeys::remove));
  EXPECT_EQ(store.device_count(), 0u);
}

TEST_F(KeyStoreLimits, RemovingALegacyDeviceKeepsTheUsersFolders) {
  // An old store where D is both a legacy device and a user (made before collisions were refused).
  KeyStore(root_).store(kNoUser, "D", pair_, false);
  fs::create_directories(root_ / "D" / "dev");
  test::write_file((root_ / "D" / "dev" / "sensor_private.pem").string(), pair_.private_pem, 0600);
  KeyStore store(root_);
  EXPECT_EQ(store.device_count(), 2u);

  EXPECT_TRUE(store.remove(kNoUser, "D"));
  EXPECT_EQ(names_in(root_ / "D"), std::set<std::string>{"dev"});
  EXPECT_TRUE(store.has_keys(std::string("D"), "dev"));
  EXPECT_FALSE(store.remove(kNoUser, "D"));
  // And from the other side: user X's delete of device D leaves user D's devices alone.
  store.store(std::string("X"), "D", pair_, false);
  EXPECT_TRUE(store.remove(std::string("X"), "D", LegacyKeys::remove));
  EXPECT_TRUE(store.has_keys(std::string("D"), "dev"));
  EXPECT_EQ(store.device_count(), 1u);
}

}  // namespace
}  // namespace pa::keystore
