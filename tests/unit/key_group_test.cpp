// SPEC section 5: with a key group, folders are 0750 and private keys (and backups) 0640, owned by
// that group, public keys 0644; the ownership and mode checks of the key store root, the state
// folder and the agent key accept exactly that group's read bit. The group used is one the
// process may really give files to (key_store_support.hpp), so these run as root and as any user.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "key_store_support.hpp"
#include "keystore/key_store.hpp"
#include "test_support.hpp"

namespace pa::keystore {
namespace {

namespace fs = std::filesystem;
using store_test::group_of;
using store_test::ScopedUmask;
using store_test::TestGroup;

const std::optional<std::string> kNoUser;

class KeyGroup : public ::testing::Test {
 protected:
  StoreOptions with_group() const { return StoreOptions{group_.name, kDefaultMaxDevices}; }

  // The mode and the group of a path.
  void expect(const fs::path& path, int mode, gid_t gid) {
    EXPECT_EQ(test::file_mode(path.string()), mode) << path;
    EXPECT_EQ(group_of(path), gid) << path;
  }

  test::TempDir tmp_;
  fs::path root_ = fs::path(tmp_.path()) / "keys";
  TestGroup group_ = store_test::usable_group();
};

TEST_F(KeyGroup, ResolvesTheGroup) {
  EXPECT_EQ(resolve_group(group_.name), group_.gid);
  EXPECT_EQ(group_name(group_.gid), group_.name);
  EXPECT_EQ(resolve_group(std::to_string(group_.gid)), group_.gid);
  try {
    resolve_group("no-such-group-pa");
    FAIL() << "an unknown group was resolved";
  } catch (const GroupError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown group \"no-such-group-pa\""), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(KeyStore(root_, StoreOptions{std::string("no-such-group-pa")}), GroupError);
  EXPECT_FALSE(fs::exists(root_)) << "an unknown group must stop before anything is created";
}

TEST_F(KeyGroup, FilesAndFoldersBelongToTheGroup) {
  for (mode_t mask : {mode_t{0}, mode_t{0077}}) {
    SCOPED_TRACE(mask);
    ScopedUmask umask(mask);
    test::TempDir tmp;
    const fs::path root = fs::path(tmp.path()) / "var" / "keys";
    KeyStore store(root, with_group());
    ASSERT_EQ(store.key_group(), group_.gid);
    store.store(std::string("alice"), "pH01", generate_key_pair(KeyType::ec_p256), false);
    store.store(std::string("alice"), "pH01", generate_key_pair(KeyType::ec_p256), true);
    store.store(kNoUser, "legacy", generate_key_pair(KeyType::ec_p256), false);

    const fs::path dir = root / "alice" / "pH01";
    expect(root.parent_path(), 0750, group_.gid);  // a parent the store made
    expect(root, 0750, group_.gid);
    expect(root / "alice", 0750, group_.gid);
    expect(dir, 0750, group_.gid);
    expect(dir / "sensor_private.pem", 0640, group_.gid);
    expect(dir / "sensor_public.pem", 0644, group_.gid);
    expect(dir / "sensor_private.prev.pem", 0640, group_.gid);
    expect(dir / "sensor_public.prev.pem", 0640, group_.gid);
    expect(root / "legacy", 0750, group_.gid);
    expect(root / "legacy" / "sensor_private.pem", 0640, group_.gid);
    expect(root / "legacy" / "sensor_public.pem", 0644, group_.gid);

    // A repaired public key too.
    fs::remove(dir / "sensor_public.pem");
    ASSERT_TRUE(store.load(std::string("alice"), "pH01")->repaired);
    expect(dir / "sensor_public.pem", 0644, group_.gid);
  }
}

TEST_F(KeyGroup, ExistingFoldersJoinTheGroupWhenWrittenTo) {
  {
    KeyStore(root_).store(std::string("alice"), "old", generate_key_pair(KeyType::ec_p256), false);
  }
  const gid_t before = group_of(root_ / "alice");
  ASSERT_EQ(test::file_mode((root_ / "alice").string()), 0700);

  KeyStore store(root_, with_group());  // a 0700 root is stricter than needed: fine
  expect(root_ / "alice", 0700, before);
  store.store(std::string("alice"), "new", generate_key_pair(KeyType::ec_p256), false);
  expect(root_ / "alice", 0750, group_.gid);
  expect(root_ / "alice" / "new", 0750, group_.gid);
  // The old device's files are rewritten by the next store() only.
  expect(root_ / "alice" / "old" / "sensor_private.pem", 0600, before);
  store.store(std::string("alice"), "old", generate_key_pair(KeyType::ec_p256), false);
  expect(root_ / "alice" / "old", 0750, group_.gid);
  expect(root_ / "alice" / "old" / "sensor_private.pem", 0640, group_.gid);
  // The root is the operator's: checked, never changed.
  EXPECT_EQ(test::file_mode(root_.string()), 0700);
}

TEST_F(KeyGroup, RootChecksAcceptExactlyTheGroupsRead) {
  { KeyStore store(root_, with_group()); }
  EXPECT_NO_THROW(KeyStore(root_, with_group()));
  ASSERT_EQ(::chmod(root_.c_str(), 0710), 0);
  EXPECT_NO_THROW(KeyStore(root_, with_group()));

  ASSERT_EQ(::chmod(root_.c_str(), 0770), 0);
  try {
    KeyStore store(root_, with_group());
    FAIL() << "a group-writable root was accepted";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(), "is group-writable (mode 0770)");
    EXPECT_EQ(e.fix(), "chmod 750 " + root_.string());
    EXPECT_EQ(std::string(e.what()), "key store root " + root_.string() +
                                         " is group-writable (mode 0770); fix: chmod 750 " +
                                         root_.string());
  }

  ASSERT_EQ(::chmod(root_.c_str(), 0751), 0);
  try {
    KeyStore store(root_, with_group());
    FAIL() << "a root open to others was accepted";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(), "is accessible by others (mode 0751)");
    EXPECT_EQ(e.fix(), "chmod 750 " + root_.string());
  }

  // Without the key group, the group's read bit is refused too.
  ASSERT_EQ(::chmod(root_.c_str(), 0750), 0);
  try {
    KeyStore store(root_);
    FAIL() << "a group-readable root was accepted without a key group";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(),
              "is readable by group " + group_.name + " while no key group is set (mode 0750)");
    EXPECT_EQ(e.fix(), "chmod 700 " + root_.string());
  }
}

TEST_F(KeyGroup, FolderReadableByAnotherGroupIsRefused) {
  // The folder belongs to a group the process has; the key group is another one (no membership
  // is needed to check against it).
  const fs::path state = tmp_.file("state");
  ASSERT_EQ(::mkdir(state.c_str(), 0700), 0);
  ASSERT_EQ(::chown(state.c_str(), static_cast<uid_t>(-1), group_.gid), 0);
  ASSERT_EQ(::chmod(state.c_str(), 0750), 0);
  const TestGroup key = store_test::other_group(group_.gid);
  ASSERT_NE(key.gid, group_.gid);
  EXPECT_NO_THROW(require_private_folder(state, group_.gid));
  try {
    require_private_folder(state, key.gid, "state folder ");
    FAIL() << "a folder readable by another group was accepted";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.path(), state);
    EXPECT_EQ(e.problem(), "is readable by group " + group_.name + ", not the key group " +
                               key.name + " (mode 0750)");
    EXPECT_EQ(e.fix(), "chgrp " + key.name + " " + state.string());
    EXPECT_EQ(std::string(e.what()),
              "state folder " + state.string() + " " + e.problem() + "; fix: " + e.fix());
  }
  // Writable by the group and readable by others on top: every fix at once.
  ASSERT_EQ(::chmod(state.c_str(), 0775), 0);
  try {
    require_private_folder(state, key.gid);
    FAIL() << "a loose folder was accepted";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(), "is group-writable, readable by group " + group_.name +
                               ", not the key group " + key.name +
                               " and readable by others (mode 0775)");
    EXPECT_EQ(e.fix(),
              "chgrp " + key.name + " " + state.string() + " && chmod 750 " + state.string());
  }
}

TEST_F(KeyGroup, PrivateFileRules) {
  const fs::path key = tmp_.file("agent_private.pem");
  test::write_file(key.string(), "secret\n", 0600);
  EXPECT_NO_THROW(require_private_file(key));
  EXPECT_EQ(read_private_file(key), "secret\n");
  ASSERT_EQ(::chmod(key.c_str(), 0400), 0);
  EXPECT_NO_THROW(require_private_file(key));

  ASSERT_EQ(::chown(key.c_str(), static_cast<uid_t>(-1), group_.gid), 0);
  ASSERT_EQ(::chmod(key.c_str(), 0640), 0);
  EXPECT_NO_THROW(require_private_file(key, group_.gid));
  EXPECT_EQ(read_private_file(key, group_.gid), "secret\n");
  try {
    require_private_file(key);
    FAIL() << "a group-readable key was accepted without a key group";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(),
              "is readable by group " + group_.name + " while no key group is set (mode 0640)");
    EXPECT_EQ(e.fix(), "chmod 600 " + key.string());
  }
  // A file never has the group's execute bit, nor anything for others.
  ASSERT_EQ(::chmod(key.c_str(), 0654), 0);
  try {
    read_private_file(key, group_.gid, "agent key ");
    FAIL() << "a key readable by others was read";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(),
              "is executable by group " + group_.name + " and readable by others (mode 0654)");
    EXPECT_EQ(e.fix(), "chmod 640 " + key.string());
    EXPECT_EQ(std::string(e.what()).rfind("agent key " + key.string(), 0), 0u) << e.what();
  }
  ASSERT_EQ(::chmod(key.c_str(), 0660), 0);
  EXPECT_THROW(require_private_file(key, group_.gid), PermissionError);

  // Not followed, not a special file, not missing.
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  const fs::path link = tmp_.file("link.pem");
  fs::create_symlink(key, link);
  try {
    read_private_file(link);
    FAIL() << "a symlinked key was read";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(), "is a symlink (not followed)");
  }
  ASSERT_EQ(::mkfifo(tmp_.file("fifo").c_str(), 0600), 0);
  EXPECT_THROW(read_private_file(tmp_.file("fifo")), StoreError);
  EXPECT_THROW(require_private_file(tmp_.file("missing")), StoreError);
  EXPECT_THROW(require_private_folder(key), StoreError);  // not a folder
}

TEST_F(KeyGroup, OwnerMustBeUsOrRoot) {
  const fs::path state = tmp_.file("state");
  ASSERT_EQ(::mkdir(state.c_str(), 0700), 0);
  EXPECT_NO_THROW(require_private_folder(state));
  // check_private_stat is what every check runs on its fstat: another owner is named.
  struct stat st {};
  ASSERT_EQ(::stat(state.c_str(), &st), 0);
  st.st_uid = ::geteuid() + 1000;
  try {
    check_private_stat(st, state, PathKind::folder, std::nullopt);
    FAIL() << "another owner was accepted";
  } catch (const PermissionError& e) {
    EXPECT_EQ(e.problem(), "is owned by uid " + std::to_string(st.st_uid) + ", not " +
                               std::to_string(::geteuid()));
    EXPECT_EQ(e.fix(), "chown " + std::to_string(::geteuid()) + " " + state.string());
  }
  st.st_uid = 0;  // root's are fine
  EXPECT_NO_THROW(check_private_stat(st, state, PathKind::folder, std::nullopt));

  // A real root folder given away (only root can give it away).
  if (::geteuid() == 0) {
    const fs::path root = tmp_.file("keys");
    { KeyStore store(root); }
    ASSERT_EQ(::chown(root.c_str(), 1001, 1001), 0);
    try {
      KeyStore store(root);
      FAIL() << "a root owned by uid 1001 was accepted";
    } catch (const PermissionError& e) {
      EXPECT_EQ(e.problem(), "is owned by uid 1001, not 0");
      EXPECT_EQ(e.fix(), "chown 0 " + root.string());
    }
    EXPECT_THROW(require_private_path(root), PermissionError);
  }
}

TEST_F(KeyGroup, MembershipIsRequiredToGiveFilesAway) {
  const std::optional<TestGroup> foreign = store_test::foreign_group();
  ASSERT_TRUE(foreign) << "the process belongs to every group of the database";
  if (::geteuid() == 0) {
    // Root may give files to any group.
    KeyStore store(root_, StoreOptions{foreign->name});
    store.store(kNoUser, "dev", generate_key_pair(KeyType::ec_p256), false);
    expect(root_ / "dev" / "sensor_private.pem", 0640, foreign->gid);
  } else {
    try {
      KeyStore store(root_, StoreOptions{foreign->name});
      FAIL() << "a group the process cannot give files to was accepted";
    } catch (const GroupError& e) {
      EXPECT_NE(std::string(e.what()).find("is not a member of the key group " + foreign->name),
                std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("usermod -aG " + foreign->name), std::string::npos)
          << e.what();
    }
    EXPECT_FALSE(fs::exists(root_));
  }
  EXPECT_NO_THROW(require_group_member(::getegid()));
  EXPECT_NO_THROW(require_group_member(group_.gid));
}

}  // namespace
}  // namespace pa::keystore
