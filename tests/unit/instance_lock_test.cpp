// SPEC section 5: one agent at a time. A second holder of `.provision-agent.lock` (in the key store
// root or the state folder) learns the first one's PID.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "keystore/key_store.hpp"
#include "test_support.hpp"

namespace pa::keystore {
namespace {

namespace fs = std::filesystem;

TEST(InstanceLock, WritesOurPidAndRefusesASecondHolder) {
  test::TempDir tmp;
  const fs::path lock_file = tmp.file(".provision-agent.lock");
  {
    InstanceLock lock(fs::path(tmp.path()));
    EXPECT_EQ(lock.folder(), fs::path(tmp.path()));
    EXPECT_EQ(test::read_file(lock_file.string()), std::to_string(::getpid()) + "\n");
    EXPECT_EQ(test::file_mode(lock_file.string()), 0600);
    // Another open of the file, even in this process, does not get it.
    try {
      InstanceLock second{fs::path(tmp.path())};
      FAIL() << "the lock was taken twice";
    } catch (const InstanceLockedError& e) {
      EXPECT_EQ(e.holder(), ::getpid());
      EXPECT_EQ(e.folder(), fs::path(tmp.path()));
      EXPECT_EQ(std::string(e.what()), "another provision-agent (PID " +
                                           std::to_string(::getpid()) + ") is using " + tmp.path());
    }
    InstanceLock moved(std::move(lock));
    EXPECT_THROW(InstanceLock{fs::path(tmp.path())}, InstanceLockedError);
  }
  // Released and emptied: a stale PID is never reported.
  EXPECT_EQ(test::read_file(lock_file.string()), "");
  InstanceLock again{fs::path(tmp.path())};
  EXPECT_EQ(test::read_file(lock_file.string()), std::to_string(::getpid()) + "\n");
}

TEST(InstanceLock, HeldByAnotherProcess) {
  test::TempDir tmp;
  const fs::path folder(tmp.path());
  int locked[2];
  int release[2];
  ASSERT_EQ(::pipe(locked), 0);
  ASSERT_EQ(::pipe(release), 0);
  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    ::close(locked[0]);
    ::close(release[1]);
    try {
      InstanceLock lock(folder);
      char byte = 'L';
      if (::write(locked[1], &byte, 1) != 1) ::_exit(2);
      if (::read(release[0], &byte, 1) < 0) ::_exit(4);  // until the parent is done, or gone
    } catch (...) {
      ::_exit(3);
    }
    ::_exit(0);
  }
  ::close(locked[1]);
  ::close(release[0]);
  char byte = 0;
  ASSERT_EQ(::read(locked[0], &byte, 1), 1) << "the child did not take the lock";
  try {
    InstanceLock lock(folder);
    ADD_FAILURE() << "the lock was taken while another process held it";
  } catch (const InstanceLockedError& e) {
    EXPECT_EQ(e.holder(), child);
    EXPECT_EQ(std::string(e.what()),
              "another provision-agent (PID " + std::to_string(child) + ") is using " + tmp.path());
  }
  ::close(release[1]);  // the child returns and exits, which releases the lock
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ::close(locked[0]);

  InstanceLock lock(folder);
  EXPECT_EQ(test::read_file(tmp.file(".provision-agent.lock")), std::to_string(::getpid()) + "\n");
}

TEST(InstanceLock, KeyStoreRootLockIsIgnoredByListings) {
  test::TempDir tmp;
  const fs::path root = tmp.file("keys");
  KeyStore store(root);
  const InstanceLock lock = store.lock_instance();
  EXPECT_EQ(lock.folder(), root);
  EXPECT_TRUE(fs::is_regular_file(root / ".provision-agent.lock"));
  EXPECT_THROW(KeyStore(root).lock_instance(), InstanceLockedError);
  EXPECT_THROW(InstanceLock{root}, InstanceLockedError);  // by path, as for the state folder

  store.store(std::nullopt, "dev", generate_key_pair(KeyType::ec_p256), false);
  const std::vector<DeviceFolder> folders = list_device_folders(root);
  ASSERT_EQ(folders.size(), 1u);
  EXPECT_EQ(folders[0].device, "dev");
  EXPECT_EQ(KeyStore(root).device_count(), 1u);
  EXPECT_TRUE(store.remove(std::nullopt, "dev"));
  EXPECT_TRUE(list_device_folders(root).empty());
}

TEST(InstanceLock, RefusesSpecialFiles) {
  test::TempDir tmp;
  ASSERT_EQ(::mkfifo(tmp.file(".provision-agent.lock").c_str(), 0600), 0);
  try {
    InstanceLock lock{fs::path(tmp.path())};
    FAIL() << "a FIFO was used as the lock file";
  } catch (const InstanceLockedError&) {
    FAIL() << "a FIFO is not a lock held by anyone";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("is not a file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(InstanceLock{fs::path(tmp.file("missing"))}, StoreError);
}

}  // namespace
}  // namespace pa::keystore
