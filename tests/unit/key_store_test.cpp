// SPEC section 5: layout, modes, backups, repair, removal, candidates for decryption, refusal of a
// loose root, and atomic writes that a crash at any step leaves as the old or the new pair.
#include "keystore/key_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "key_store_support.hpp"
#include "keystore/file_util.hpp"
#include "test_support.hpp"

namespace pa::keystore {
namespace {

const char* step_name(WriteStep step) {
  switch (step) {
    case WriteStep::backup_written:
      return "backup_written";
    case WriteStep::private_temp_synced:
      return "private_temp_synced";
    case WriteStep::public_temp_synced:
      return "public_temp_synced";
    case WriteStep::private_renamed:
      return "private_renamed";
    case WriteStep::public_renamed:
      return "public_renamed";
  }
  return "unknown";
}

}  // namespace

// Names test parameters in test names and messages (found by ADL; internal linkage so another
// test file may define its own).
static void PrintTo(WriteStep step, std::ostream* out) {
  *out << step_name(step);
}

namespace {

namespace fs = std::filesystem;
using store_test::names_in;
using store_test::ScopedUmask;

const std::optional<std::string> kNoUser;

class KeyStoreTest : public ::testing::Test {
 protected:
  test::TempDir tmp_;
  fs::path root_ = fs::path(tmp_.path()) / "keys";
};

TEST_F(KeyStoreTest, CreatesMissingRootPrivate) {
  ScopedUmask umask(0);
  const fs::path nested = fs::path(tmp_.path()) / "var" / "lib" / "keys";
  ASSERT_FALSE(fs::exists(nested));
  KeyStore store(nested);
  EXPECT_EQ(store.root(), nested);
  EXPECT_TRUE(fs::is_directory(nested));
  EXPECT_EQ(test::file_mode(nested), 0700);
  EXPECT_EQ(test::file_mode(nested.parent_path()), 0700);
}

TEST_F(KeyStoreTest, DevicePathsForUserAndLegacyLayouts) {
  KeyStore store(root_);
  EXPECT_EQ(store.device_dir(std::string("alice"), "pH01"), root_ / "alice" / "pH01");
  EXPECT_EQ(store.device_dir(std::string("42"), "pH01"), root_ / "42" / "pH01");
  EXPECT_EQ(store.device_dir(kNoUser, "pH01"), root_ / "pH01");

  EXPECT_THROW(store.device_dir(kNoUser, ".."), std::invalid_argument);
  EXPECT_THROW(store.device_dir(kNoUser, "a/b"), std::invalid_argument);
  EXPECT_THROW(store.device_dir(kNoUser, ""), std::invalid_argument);
  EXPECT_THROW(store.device_dir(std::string(".."), "pH01"), std::invalid_argument);
  EXPECT_THROW(store.device_dir(std::string(""), "pH01"), std::invalid_argument);
  EXPECT_THROW(store.device_dir(std::string("a/b"), "pH01"), std::invalid_argument);

  // An invalid id never touches the file system.
  const KeyPair pair = generate_key_pair(KeyType::ec_p256);
  EXPECT_THROW(store.store(std::string(".."), "x", pair, false), std::invalid_argument);
  EXPECT_THROW(store.store(kNoUser, "../escape", pair, false), std::invalid_argument);
  EXPECT_THROW(store.load(kNoUser, "/etc"), std::invalid_argument);
  EXPECT_THROW(store.remove(kNoUser, "."), std::invalid_argument);
  EXPECT_THROW(store.private_key_candidates(".."), std::invalid_argument);
  EXPECT_TRUE(names_in(root_).empty());
  EXPECT_FALSE(fs::exists(tmp_.file("escape")));
}

TEST_F(KeyStoreTest, StoreThenLoad) {
  KeyStore store(root_);
  EXPECT_FALSE(store.has_keys(std::string("alice"), "pH01"));
  EXPECT_EQ(store.load(std::string("alice"), "pH01"), std::nullopt);

  const KeyPair pair = generate_key_pair(KeyType::ec_p256);
  const StoredKey stored = store.store(std::string("alice"), "pH01", pair, false);
  EXPECT_EQ(stored.type, KeyType::ec_p256);
  EXPECT_EQ(stored.public_pem, pair.public_pem);
  EXPECT_EQ(stored.fingerprint, fingerprint(pair.public_pem));
  EXPECT_FALSE(stored.repaired);

  const fs::path dir = root_ / "alice" / "pH01";
  EXPECT_EQ(test::read_file(dir / "sensor_private.pem"), pair.private_pem);
  EXPECT_EQ(test::read_file(dir / "sensor_public.pem"), pair.public_pem);
  EXPECT_EQ(names_in(dir), (std::set<std::string>{"sensor_private.pem", "sensor_public.pem"}));
  EXPECT_TRUE(store.has_keys(std::string("alice"), "pH01"));
  EXPECT_FALSE(store.has_keys(kNoUser, "pH01"));
  EXPECT_FALSE(store.has_keys(std::string("bob"), "pH01"));

  const std::optional<StoredKey> loaded = store.load(std::string("alice"), "pH01");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->type, KeyType::ec_p256);
  EXPECT_EQ(loaded->public_pem, pair.public_pem);
  EXPECT_EQ(loaded->fingerprint, stored.fingerprint);
  EXPECT_EQ(loaded->created, fs::last_write_time(dir / "sensor_private.pem"));
  EXPECT_FALSE(loaded->repaired);

  // The legacy layout, and an RSA pair.
  const KeyPair rsa = generate_key_pair(KeyType::rsa2048);
  store.store(kNoUser, "pH01", rsa, false);
  EXPECT_EQ(test::read_file(root_ / "pH01" / "sensor_private.pem"), rsa.private_pem);
  const std::optional<StoredKey> legacy = store.load(kNoUser, "pH01");
  ASSERT_TRUE(legacy);
  EXPECT_EQ(legacy->type, KeyType::rsa2048);
  EXPECT_EQ(legacy->public_pem, rsa.public_pem);
}

TEST_F(KeyStoreTest, ModesUnderUmaskZero) {
  ScopedUmask umask(0);
  KeyStore store(root_);
  store.store(std::string("alice"), "pH01", generate_key_pair(KeyType::ec_p256), false);
  store.store(std::string("alice"), "pH01", generate_key_pair(KeyType::ec_p256), true);
  store.store(kNoUser, "legacy", generate_key_pair(KeyType::ec_p256), false);

  const fs::path dir = root_ / "alice" / "pH01";
  EXPECT_EQ(test::file_mode(root_), 0700);
  EXPECT_EQ(test::file_mode(root_ / "alice"), 0700);
  EXPECT_EQ(test::file_mode(dir), 0700);
  EXPECT_EQ(test::file_mode(dir / "sensor_private.pem"), 0600);
  EXPECT_EQ(test::file_mode(dir / "sensor_public.pem"), 0644);
  EXPECT_EQ(test::file_mode(dir / "sensor_private.prev.pem"), 0600);
  EXPECT_EQ(test::file_mode(dir / "sensor_public.prev.pem"), 0600);
  EXPECT_EQ(test::file_mode(root_ / "legacy"), 0700);
  EXPECT_EQ(test::file_mode(root_ / "legacy" / "sensor_private.pem"), 0600);
  EXPECT_EQ(test::file_mode(root_ / "legacy" / "sensor_public.pem"), 0644);

  // A repaired public key is 0644 too.
  fs::remove(dir / "sensor_public.pem");
  ASSERT_TRUE(store.load(std::string("alice"), "pH01")->repaired);
  EXPECT_EQ(test::file_mode(dir / "sensor_public.pem"), 0644);
}

TEST_F(KeyStoreTest, ModesUnderRestrictiveUmask) {
  ScopedUmask umask(0077);
  KeyStore store(root_);
  store.store(std::string("alice"), "pH01", generate_key_pair(KeyType::ec_p256), false);
  EXPECT_EQ(test::file_mode(root_ / "alice" / "pH01"), 0700);
  EXPECT_EQ(test::file_mode(root_ / "alice" / "pH01" / "sensor_private.pem"), 0600);
  EXPECT_EQ(test::file_mode(root_ / "alice" / "pH01" / "sensor_public.pem"), 0644);
}

TEST_F(KeyStoreTest, KeepsExactlyOneBackupGeneration) {
  KeyStore store(root_);
  const fs::path dir = root_ / "u1" / "dev";
  const KeyPair first = generate_key_pair(KeyType::ec_p256);
  const KeyPair second = generate_key_pair(KeyType::ec_p256);
  const KeyPair third = generate_key_pair(KeyType::ec_p256);

  store.store(std::string("u1"), "dev", first, true);  // nothing to back up yet
  EXPECT_EQ(names_in(dir), (std::set<std::string>{"sensor_private.pem", "sensor_public.pem"}));

  store.store(std::string("u1"), "dev", second, true);
  EXPECT_EQ(test::read_file(dir / "sensor_private.prev.pem"), first.private_pem);
  EXPECT_EQ(test::read_file(dir / "sensor_public.prev.pem"), first.public_pem);

  store.store(std::string("u1"), "dev", third, true);
  EXPECT_EQ(test::read_file(dir / "sensor_private.pem"), third.private_pem);
  EXPECT_EQ(test::read_file(dir / "sensor_public.pem"), third.public_pem);
  EXPECT_EQ(test::read_file(dir / "sensor_private.prev.pem"), second.private_pem);
  EXPECT_EQ(test::read_file(dir / "sensor_public.prev.pem"), second.public_pem);
  EXPECT_EQ(names_in(dir),
            (std::set<std::string>{"sensor_private.pem", "sensor_public.pem",
                                   "sensor_private.prev.pem", "sensor_public.prev.pem"}));
  EXPECT_EQ(store.load(std::string("u1"), "dev")->fingerprint, fingerprint(third.public_pem));
}

TEST_F(KeyStoreTest, RepairsDeletedPublicKey) {
  KeyStore store(root_);
  const KeyPair pair = generate_key_pair(KeyType::ec_p256);
  store.store(kNoUser, "dev", pair, false);
  const fs::path public_path = root_ / "dev" / "sensor_public.pem";
  ASSERT_TRUE(fs::remove(public_path));

  const std::optional<StoredKey> loaded = store.load(kNoUser, "dev");
  ASSERT_TRUE(loaded);
  EXPECT_TRUE(loaded->repaired);
  EXPECT_EQ(loaded->public_pem, pair.public_pem);
  EXPECT_EQ(test::read_file(public_path), pair.public_pem);
  EXPECT_FALSE(store.load(kNoUser, "dev")->repaired);
}

TEST_F(KeyStoreTest, RepairsMismatchedPublicKey) {
  KeyStore store(root_);
  const KeyPair pair = generate_key_pair(KeyType::rsa2048);
  store.store(std::string("u"), "dev", pair, false);
  const fs::path public_path = root_ / "u" / "dev" / "sensor_public.pem";

  for (const std::string& wrong :
       {generate_key_pair(KeyType::ec_p256).public_pem, std::string("garbage"), std::string()}) {
    test::write_file(public_path, wrong);
    const std::optional<StoredKey> loaded = store.load(std::string("u"), "dev");
    ASSERT_TRUE(loaded);
    EXPECT_TRUE(loaded->repaired);
    EXPECT_EQ(loaded->fingerprint, fingerprint(pair.public_pem));
    EXPECT_EQ(test::read_file(public_path), pair.public_pem);
  }
  // The same key with other line breaks is not a mismatch: the file is left as it is.
  std::string reflowed = pair.public_pem;
  std::replace(reflowed.begin(), reflowed.end(), '\n', ' ');
  reflowed.replace(0, std::string("-----BEGIN PUBLIC KEY----- ").size(),
                   "-----BEGIN PUBLIC KEY-----\n");
  test::write_file(public_path, reflowed);
  EXPECT_FALSE(store.load(std::string("u"), "dev")->repaired);
  EXPECT_EQ(test::read_file(public_path), reflowed);
}

TEST_F(KeyStoreTest, RemoveDeletesPairBackupsAndFolder) {
  KeyStore store(root_);
  store.store(std::string("u"), "dev", generate_key_pair(KeyType::ec_p256), false);
  store.store(std::string("u"), "dev", generate_key_pair(KeyType::ec_p256), true);
  store.store(std::string("u"), "other", generate_key_pair(KeyType::ec_p256), false);
  ASSERT_EQ(names_in(root_ / "u" / "dev").size(), 4u);

  EXPECT_TRUE(store.remove(std::string("u"), "dev"));
  EXPECT_FALSE(fs::exists(root_ / "u" / "dev"));
  EXPECT_FALSE(store.has_keys(std::string("u"), "dev"));
  EXPECT_EQ(store.load(std::string("u"), "dev"), std::nullopt);
  EXPECT_TRUE(store.has_keys(std::string("u"), "other"));
  EXPECT_FALSE(store.remove(std::string("u"), "dev"));
  EXPECT_FALSE(store.remove(kNoUser, "never"));

  store.store(kNoUser, "legacy", generate_key_pair(KeyType::ec_p256), false);
  EXPECT_TRUE(store.remove(kNoUser, "legacy"));
  EXPECT_FALSE(fs::exists(root_ / "legacy"));
}

TEST_F(KeyStoreTest, PrivateKeyCandidatesOrder) {
  KeyStore store(root_);
  EXPECT_TRUE(store.private_key_candidates("D").empty());
  for (const char* user : {"zoe", "bob", "alice"}) {
    store.store(std::string(user), "D", generate_key_pair(KeyType::ec_p256), false);
  }
  store.store(std::string("carol"), "other", generate_key_pair(KeyType::ec_p256), false);
  store.store(kNoUser, "D", generate_key_pair(KeyType::ec_p256), false);
  // Legacy device folders look like user folders but hold no <device>/sensor_private.pem.
  store.store(kNoUser, "legacy", generate_key_pair(KeyType::ec_p256), false);
  // A user folder with the device folder but no private key in it.
  fs::create_directories(root_ / "dave" / "D");
  // The lock file is no folder of either kind.
  const InstanceLock lock = store.lock_instance();

  const std::vector<fs::path> expected = {
      root_ / "alice" / "D" / "sensor_private.pem",
      root_ / "bob" / "D" / "sensor_private.pem",
      root_ / "zoe" / "D" / "sensor_private.pem",
      root_ / "D" / "sensor_private.pem",
  };
  EXPECT_EQ(store.private_key_candidates("D"), expected);
  EXPECT_EQ(store.private_key_candidates("other"),
            std::vector<fs::path>{root_ / "carol" / "other" / "sensor_private.pem"});
  EXPECT_TRUE(store.private_key_candidates("legacy").size() == 1);
  EXPECT_TRUE(store.private_key_candidates("nobody").empty());

  // The same as folders, each readable through folder descriptors.
  const std::vector<DeviceFolder> folders = store.private_key_folders("D");
  ASSERT_EQ(folders.size(), expected.size());
  for (std::size_t i = 0; i < folders.size(); ++i) {
    EXPECT_EQ(folders[i].dir / "sensor_private.pem", expected[i]);
    EXPECT_EQ(folders[i].device, "D");
    const std::optional<std::string> pem = store.read_private_key(folders[i].user, "D");
    ASSERT_TRUE(pem);
    EXPECT_EQ(*pem, test::read_file(expected[i]));
  }
  EXPECT_EQ(folders[0].user, std::optional<std::string>("alice"));
  EXPECT_EQ(folders[3].user, std::nullopt);
  EXPECT_EQ(store.read_private_key(std::string("dave"), "D"), std::nullopt);
  EXPECT_EQ(store.read_private_key(std::string("nobody"), "D"), std::nullopt);
}

TEST_F(KeyStoreTest, RefusesLooseRoot) {
  { KeyStore store(root_); }
  const std::string path = root_.string();
  ASSERT_EQ(::chmod(root_.c_str(), 0777), 0);
  try {
    KeyStore store(root_);
    FAIL() << "a world-writable root was accepted";
  } catch (const PermissionError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("world-writable"), std::string::npos) << what;
    EXPECT_NE(what.find("(mode 0777)"), std::string::npos) << what;
    EXPECT_NE(what.find("chmod 700 " + path), std::string::npos) << what;
  }

  ASSERT_EQ(::chmod(root_.c_str(), 0770), 0);
  try {
    KeyStore store(root_);
    FAIL() << "a group-writable root was accepted";
  } catch (const PermissionError& e) {
    EXPECT_NE(std::string(e.what()).find("group-writable"), std::string::npos) << e.what();
  }

  // Readable by others, or by a group when no key group is set: the keys' folder names leak.
  ASSERT_EQ(::chmod(root_.c_str(), 0755), 0);
  try {
    KeyStore store(root_);
    FAIL() << "a root readable by others was accepted";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.path(), root_);
    EXPECT_NE(e.problem().find("readable by others"), std::string::npos) << e.what();
    EXPECT_NE(e.problem().find("(mode 0755)"), std::string::npos) << e.what();
    EXPECT_EQ(e.fix(), "chmod 700 " + path);
  }

  // "No more permissive than": 0700 and 0500 are fine.
  ASSERT_EQ(::chmod(root_.c_str(), 0500), 0);
  EXPECT_NO_THROW(KeyStore store(root_));
  ASSERT_EQ(::chmod(root_.c_str(), 0700), 0);
  EXPECT_NO_THROW(KeyStore store(root_));
  // Plugin folders may be readable (SPEC section 6): the plugin rule is about writing only.
  ASSERT_EQ(::chmod(root_.c_str(), 0755), 0);
  EXPECT_NO_THROW(require_private_path(root_));

  // Any path (a plugin file, say): the fix keeps the mode but for group and world write.
  const fs::path plugin = tmp_.file("plugin.so");
  test::write_file(plugin, "");
  ASSERT_EQ(::chmod(plugin.c_str(), 0666), 0);
  try {
    require_private_path(plugin);
    FAIL() << "a world-writable file was accepted";
  } catch (const PermissionError& e) {
    EXPECT_EQ(std::string(e.what()), plugin.string() +
                                         " is group- and world-writable (mode 0666); " +
                                         "fix: chmod 644 " + plugin.string());
    EXPECT_EQ(e.path(), plugin);
    EXPECT_EQ(e.problem(), "is group- and world-writable (mode 0666)");
    EXPECT_EQ(e.fix(), "chmod 644 " + plugin.string());
  }
  ASSERT_EQ(::chmod(plugin.c_str(), 0644), 0);
  EXPECT_NO_THROW(require_private_path(plugin));
  EXPECT_THROW(require_private_path(tmp_.file("missing")), StoreError);
}

TEST_F(KeyStoreTest, DoesNotFollowSymlinks) {
  KeyStore store(root_);
  const KeyPair pair = generate_key_pair(KeyType::ec_p256);
  const fs::path outside = tmp_.file("outside");
  fs::create_directories(outside);
  test::write_file(outside / "sensor_private.pem", pair.private_pem);

  // A key file that is a symlink out of the store.
  store.store(kNoUser, "dev", generate_key_pair(KeyType::ec_p256), false);
  fs::remove(root_ / "dev" / "sensor_private.pem");
  fs::create_symlink(outside / "sensor_private.pem", root_ / "dev" / "sensor_private.pem");
  EXPECT_FALSE(store.has_keys(kNoUser, "dev"));
  EXPECT_THROW(store.load(kNoUser, "dev"), StoreError);

  // A device folder or user folder that is a symlink out of the store.
  fs::create_directory_symlink(outside, root_ / "linked");
  EXPECT_FALSE(store.has_keys(kNoUser, "linked"));
  EXPECT_THROW(store.load(kNoUser, "linked"), StoreError);
  EXPECT_THROW(store.store(kNoUser, "linked", pair, false), StoreError);
  EXPECT_THROW(store.remove(kNoUser, "linked"), StoreError);
  fs::create_directories(outside / "D");
  test::write_file(outside / "D" / "sensor_private.pem", pair.private_pem);
  EXPECT_TRUE(store.private_key_candidates("D").empty());
  EXPECT_THROW(store.load(std::string("linked"), "D"), StoreError);
  EXPECT_EQ(test::read_file(outside / "sensor_private.pem"), pair.private_pem);
}

TEST_F(KeyStoreTest, RefusesMismatchedPair) {
  KeyStore store(root_);
  KeyPair pair = generate_key_pair(KeyType::ec_p256);
  pair.public_pem = generate_key_pair(KeyType::ec_p256).public_pem;
  EXPECT_THROW(store.store(kNoUser, "dev", pair, false), StoreError);
  EXPECT_THROW(store.store(kNoUser, "dev", KeyPair{KeyType::ec_p256, "junk", "junk"}, false),
               StoreError);
  EXPECT_FALSE(store.has_keys(kNoUser, "dev"));
}

TEST_F(KeyStoreTest, RemovesStaleTemporaryFiles) {
  KeyStore store(root_);
  store.store(kNoUser, "dev", generate_key_pair(KeyType::ec_p256), false);
  const fs::path dir = root_ / "dev";
  test::write_file(dir / ".sensor_private.pem.tmp-AbC123", "partial");
  test::write_file(dir / ".sensor_public.pem.tmp-XyZ789", "partial");
  test::write_file(dir / "notes.txt", "kept");
  store.store(kNoUser, "dev", generate_key_pair(KeyType::ec_p256), false);
  EXPECT_EQ(names_in(dir),
            (std::set<std::string>{"sensor_private.pem", "sensor_public.pem", "notes.txt"}));
}

TEST(KeyStoreFiles, AtomicWriteIsBornWithItsMode) {
  ScopedUmask umask(0);
  test::TempDir tmp;
  const fs::path target = tmp.file("secret.pem");
  write_file_atomic(target, "one", 0600);
  EXPECT_EQ(test::file_mode(target), 0600);
  EXPECT_EQ(read_file(target), "one");
  write_file_atomic(target, "two", 0644);
  EXPECT_EQ(test::file_mode(target), 0644);
  EXPECT_EQ(read_file(target), "two");

  const fs::path temp = write_temp_file(target, "three", 0600);
  EXPECT_EQ(temp.parent_path(), fs::path(tmp.path()));
  EXPECT_EQ(temp.filename().string().rfind(".secret.pem.tmp-", 0), 0u) << temp;
  EXPECT_EQ(temp.filename().string().size(), std::string(".secret.pem.tmp-").size() + 6);
  EXPECT_EQ(test::file_mode(temp), 0600);
  EXPECT_EQ(read_file(temp), "three");
  EXPECT_NE(write_temp_file(target, "four", 0600), temp);  // random suffixes
  EXPECT_THROW(read_file(tmp.file("missing")), std::system_error);
  EXPECT_THROW(write_file_atomic(tmp.file("no/such/dir"), "x", 0600), std::system_error);
}

TEST(KeyStoreFiles, UniqueFdClosesAndMoves) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  {
    UniqueFd read_end(fds[0]);
    UniqueFd moved(std::move(read_end));
    EXPECT_FALSE(read_end);
    EXPECT_EQ(moved.get(), fds[0]);
    UniqueFd assigned;
    assigned = std::move(moved);
    EXPECT_EQ(assigned.get(), fds[0]);
  }
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1);  // closed exactly once, by its last owner
  UniqueFd write_end(fds[1]);
  const int raw = write_end.release();
  EXPECT_FALSE(write_end);
  EXPECT_EQ(::close(raw), 0);
}

// A crash (the process ending) after each step of a write leaves the old or the new pair, both
// files whole, and the next store() cleans up whatever temporary files the crash left.
class KeyStoreCrash : public ::testing::TestWithParam<WriteStep> {};

TEST_P(KeyStoreCrash, LeavesOldOrNewPair) {
  const WriteStep crash_at = GetParam();
  test::TempDir tmp;
  const fs::path root = tmp.file("keys");
  const std::optional<std::string> user("u");
  const fs::path dir = root / "u" / "dev";
  const KeyPair old_pair = generate_key_pair(KeyType::ec_p256);
  const KeyPair new_pair = generate_key_pair(KeyType::ec_p256);
  KeyStore(root).store(user, "dev", old_pair, false);

  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    try {
      KeyStore store(root);
      store.set_write_step_hook([crash_at](WriteStep step) {
        if (step == crash_at) ::_exit(0);
      });
      store.store(user, "dev", new_pair, true);
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(3);  // the step never came
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "the child did not stop at the step";

  // Temporary files are left exactly when the crash came between writing and renaming them.
  const bool temps_expected = crash_at == WriteStep::private_temp_synced ||
                              crash_at == WriteStep::public_temp_synced ||
                              crash_at == WriteStep::private_renamed;
  const std::set<std::string> after_crash = names_in(dir);
  EXPECT_EQ(std::any_of(after_crash.begin(), after_crash.end(),
                        [](const std::string& name) { return name.find(".tmp-") != name.npos; }),
            temps_expected);

  KeyStore store(root);
  const std::optional<StoredKey> loaded = store.load(user, "dev");
  ASSERT_TRUE(loaded);
  const std::string private_pem = test::read_file(dir / "sensor_private.pem");
  const std::string public_pem = test::read_file(dir / "sensor_public.pem");
  EXPECT_NO_THROW(key_pair_from_private_pem(private_pem));
  EXPECT_NO_THROW(fingerprint(public_pem));
  const bool is_old = private_pem == old_pair.private_pem && public_pem == old_pair.public_pem;
  const bool is_new = private_pem == new_pair.private_pem && public_pem == new_pair.public_pem;
  EXPECT_TRUE(is_old || is_new) << "a mixed or damaged pair on disk";
  if (crash_at == WriteStep::backup_written || crash_at == WriteStep::private_temp_synced ||
      crash_at == WriteStep::public_temp_synced) {
    EXPECT_TRUE(is_old);
    EXPECT_FALSE(loaded->repaired);
  } else {
    EXPECT_TRUE(is_new);
    // After the private key was renamed but not the public one, load() derived the public key.
    EXPECT_EQ(loaded->repaired, crash_at == WriteStep::private_renamed);
  }
  EXPECT_EQ(loaded->fingerprint, fingerprint(is_new ? new_pair.public_pem : old_pair.public_pem));
  // The backup, when written, is the old pair.
  EXPECT_EQ(test::read_file(dir / "sensor_private.prev.pem"), old_pair.private_pem);
  EXPECT_EQ(test::read_file(dir / "sensor_public.prev.pem"), old_pair.public_pem);

  const KeyPair next = generate_key_pair(KeyType::ec_p256);
  store.store(user, "dev", next, true);
  for (const std::string& name : names_in(dir)) {
    EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name << " survived";
  }
  EXPECT_EQ(test::read_file(dir / "sensor_private.pem"), next.private_pem);
}

INSTANTIATE_TEST_SUITE_P(EveryStep, KeyStoreCrash,
                         ::testing::Values(WriteStep::backup_written,
                                           WriteStep::private_temp_synced,
                                           WriteStep::public_temp_synced,
                                           WriteStep::private_renamed, WriteStep::public_renamed),
                         [](const ::testing::TestParamInfo<WriteStep>& info) {
                           return std::string(step_name(info.param));
                         });

}  // namespace
}  // namespace pa::keystore
