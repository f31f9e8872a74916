// SPEC section 5: every access below the key store root goes through folder descriptors, so a
// symlink planted anywhere (user folder, device folder, key file, backup, temporary file name,
// lock file, the root itself) is never followed, not even while it is being swapped in and out.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

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
using store_test::status_of;

const std::optional<std::string> kNoUser;

class KeyStoreSymlinks : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(outside_);
    test::write_file(bait_.string(), "not a key\n", 0600);
  }

  // Nothing outside the store was created, changed or removed.
  void expect_outside_untouched() {
    EXPECT_EQ(test::list_tree(outside_.string()), std::vector<std::string>{"bait.pem"});
    EXPECT_EQ(test::read_file(bait_.string()), "not a key\n");
    EXPECT_EQ(test::file_mode(bait_.string()), 0600);
  }

  test::TempDir tmp_;
  fs::path root_ = fs::path(tmp_.path()) / "keys";
  fs::path outside_ = fs::path(tmp_.path()) / "outside";
  fs::path bait_ = outside_ / "bait.pem";
  KeyPair pair_ = generate_key_pair(KeyType::ec_p256);
};

TEST_F(KeyStoreSymlinks, UserFolder) {
  KeyStore store(root_);
  fs::create_directory_symlink(outside_, root_ / "mallory");
  EXPECT_THROW(store.store(std::string("mallory"), "dev", pair_, false), StoreError);
  EXPECT_THROW(store.load(std::string("mallory"), "dev"), StoreError);
  EXPECT_THROW(store.read_private_key(std::string("mallory"), "dev"), StoreError);
  EXPECT_THROW(store.remove(std::string("mallory"), "dev"), StoreError);
  EXPECT_FALSE(store.has_keys(std::string("mallory"), "dev"));
  try {
    store.store(std::string("mallory"), "dev", pair_, false);
  } catch (const StoreError& e) {
    EXPECT_NE(
        std::string(e.what()).find((root_ / "mallory").string() + " is not a folder (a symlink)"),
        std::string::npos)
        << e.what();
  }
  // A real device folder with a key behind the link is still not followed.
  fs::create_directories(outside_ / "dev");
  test::write_file((outside_ / "dev" / "sensor_private.pem").string(), pair_.private_pem, 0600);
  EXPECT_FALSE(store.has_keys(std::string("mallory"), "dev"));
  EXPECT_TRUE(store.private_key_candidates("dev").empty());
  EXPECT_TRUE(list_device_folders(root_).empty());
  EXPECT_EQ(store.device_count(), 0u);
  EXPECT_EQ(KeyStore(root_).device_count(), 0u);  // the count at open skips it too
  fs::remove_all(outside_ / "dev");
  expect_outside_untouched();
}

TEST_F(KeyStoreSymlinks, DeviceFolder) {
  KeyStore store(root_);
  store.store(std::string("u"), "real", pair_, false);
  fs::create_directory_symlink(outside_, root_ / "u" / "dev");
  EXPECT_THROW(store.store(std::string("u"), "dev", pair_, false), StoreError);
  EXPECT_THROW(store.load(std::string("u"), "dev"), StoreError);
  EXPECT_THROW(store.remove(std::string("u"), "dev"), StoreError);
  EXPECT_FALSE(store.has_keys(std::string("u"), "dev"));
  EXPECT_TRUE(store.private_key_candidates("dev").empty());
  // The legacy layout: <root>/<device> as a symlink.
  fs::create_directory_symlink(outside_, root_ / "legacy");
  EXPECT_THROW(store.store(kNoUser, "legacy", pair_, false), StoreError);
  EXPECT_THROW(store.load(kNoUser, "legacy"), StoreError);
  EXPECT_THROW(store.remove(kNoUser, "legacy"), StoreError);
  EXPECT_FALSE(store.has_keys(kNoUser, "legacy"));
  EXPECT_EQ(list_device_folders(root_).size(), 1u);  // u/real alone
  expect_outside_untouched();
  EXPECT_TRUE(S_ISLNK(status_of(root_ / "u" / "dev").st_mode));
}

TEST_F(KeyStoreSymlinks, PrivateKeyFile) {
  KeyStore store(root_);
  store.store(std::string("u"), "dev", pair_, false);
  const fs::path dir = root_ / "u" / "dev";
  fs::remove(dir / "sensor_private.pem");
  fs::create_symlink(bait_, dir / "sensor_private.pem");
  EXPECT_FALSE(store.has_keys(std::string("u"), "dev"));
  EXPECT_THROW(store.load(std::string("u"), "dev"), StoreError);
  EXPECT_THROW(store.read_private_key(std::string("u"), "dev"), StoreError);
  EXPECT_TRUE(store.private_key_candidates("dev").empty());
  // Keeping a backup reads the current key: refused rather than followed.
  EXPECT_THROW(store.store(std::string("u"), "dev", pair_, true), StoreError);
  expect_outside_untouched();
  // A new pair replaces the link itself.
  const KeyPair next = generate_key_pair(KeyType::ec_p256);
  store.store(std::string("u"), "dev", next, false);
  EXPECT_TRUE(S_ISREG(status_of(dir / "sensor_private.pem").st_mode));
  EXPECT_EQ(test::read_file((dir / "sensor_private.pem").string()), next.private_pem);
  expect_outside_untouched();
  // remove() unlinks a link, never its target.
  fs::remove(dir / "sensor_private.pem");
  fs::create_symlink(bait_, dir / "sensor_private.pem");
  EXPECT_TRUE(store.remove(std::string("u"), "dev"));
  expect_outside_untouched();
}

TEST_F(KeyStoreSymlinks, PublicKeyFileIsReplacedNotFollowed) {
  KeyStore store(root_);
  store.store(kNoUser, "dev", pair_, false);
  const fs::path public_path = root_ / "dev" / "sensor_public.pem";
  fs::remove(public_path);
  fs::create_symlink(bait_, public_path);
  const std::optional<StoredKey> loaded = store.load(kNoUser, "dev");
  ASSERT_TRUE(loaded);
  EXPECT_TRUE(loaded->repaired);
  EXPECT_TRUE(S_ISREG(status_of(public_path).st_mode));
  EXPECT_EQ(test::read_file(public_path.string()), pair_.public_pem);
  expect_outside_untouched();
}

TEST_F(KeyStoreSymlinks, BackupFilesAreReplacedNotFollowed) {
  KeyStore store(root_);
  store.store(kNoUser, "dev", pair_, false);
  const fs::path dir = root_ / "dev";
  fs::create_symlink(bait_, dir / "sensor_private.prev.pem");
  fs::create_symlink(bait_, dir / "sensor_public.prev.pem");
  store.store(kNoUser, "dev", generate_key_pair(KeyType::ec_p256), true);
  EXPECT_TRUE(S_ISREG(status_of(dir / "sensor_private.prev.pem").st_mode));
  EXPECT_EQ(test::read_file((dir / "sensor_private.prev.pem").string()), pair_.private_pem);
  EXPECT_EQ(test::read_file((dir / "sensor_public.prev.pem").string()), pair_.public_pem);
  expect_outside_untouched();
}

TEST_F(KeyStoreSymlinks, TemporaryFileNames) {
  KeyStore store(root_);
  store.store(kNoUser, "dev", pair_, false);
  const fs::path dir = root_ / "dev";
  // Links named like an interrupted write's temporary files: removed as links.
  fs::create_symlink(bait_, dir / ".sensor_private.pem.tmp-AbC123");
  fs::create_symlink(outside_, dir / ".sensor_public.pem.tmp-XyZ789");
  store.store(kNoUser, "dev", generate_key_pair(KeyType::ec_p256), false);
  EXPECT_EQ(names_in(dir), (std::set<std::string>{"sensor_private.pem", "sensor_public.pem"}));
  expect_outside_untouched();
}

TEST_F(KeyStoreSymlinks, RootItself) {
  { KeyStore store(root_); }
  const fs::path link = fs::path(tmp_.path()) / "link";
  fs::create_directory_symlink(root_, link);
  try {
    KeyStore store(link);
    FAIL() << "a symlinked root was opened";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.path(), link);
    EXPECT_EQ(e.problem(), "is a symlink (not followed)");
    EXPECT_EQ(e.fix(), "name " + fs::canonical(root_).string() + " instead");
  }
  EXPECT_THROW(list_device_folders(link), StoreError);
}

TEST_F(KeyStoreSymlinks, LockFile) {
  KeyStore store(root_);
  fs::create_symlink(bait_, root_ / ".provision-agent.lock");
  try {
    store.lock_instance();
    FAIL() << "a symlinked lock file was used";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("is a symlink"), std::string::npos) << e.what();
  }
  expect_outside_untouched();
}

// A thread swaps a folder of the store with a symlink out of it (renameat2 RENAME_EXCHANGE, so
// the name always exists), as fast as it can, while the store is used through that name. Each
// call may succeed or fail, but nothing may ever land outside.
class SwappedForALink : public KeyStoreSymlinks {
 protected:
  void run_swapping(const fs::path& name, const std::function<void(int)>& use) {
    const fs::path link = name.parent_path() / ".swap-link";
    fs::create_directory_symlink(outside_, link);
    std::atomic<bool> stop{false};
    std::atomic<int> swaps{0};
    std::thread swapper([&] {
      while (!stop.load()) {
        if (::renameat2(AT_FDCWD, name.c_str(), AT_FDCWD, link.c_str(), RENAME_EXCHANGE) == 0)
          swaps.fetch_add(1);
      }
    });
    for (int i = 0; i < 120; ++i) use(i);
    stop.store(true);
    swapper.join();
    EXPECT_GT(swaps.load(), 0);
    expect_outside_untouched();
  }
};

TEST_F(SwappedForALink, UserFolder) {
  KeyStore store(root_);
  store.store(std::string("u"), "d0", pair_, false);
  run_swapping(root_ / "u", [&](int i) {
    const std::string device = "d" + std::to_string(i % 7);
    try {
      store.store(std::string("u"), device, pair_, i % 2 == 0);
      store.load(std::string("u"), device);
      store.read_private_key(std::string("u"), device);
      store.private_key_candidates(device);
      if (i % 3 == 0) store.remove(std::string("u"), device);
    } catch (const StoreError&) {
      // refused while the link was in place
    }
  });
}

TEST_F(SwappedForALink, DeviceFolder) {
  KeyStore store(root_);
  store.store(std::string("u"), "dev", pair_, false);
  run_swapping(root_ / "u" / "dev", [&](int i) {
    try {
      store.store(std::string("u"), "dev", pair_, i % 2 == 0);
      store.load(std::string("u"), "dev");
      if (i % 5 == 0) store.remove(std::string("u"), "dev");
    } catch (const StoreError&) {
    }
  });
}

}  // namespace
}  // namespace pa::keystore
