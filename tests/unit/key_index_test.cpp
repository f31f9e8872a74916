// The key store's device index (issue 13): lookups answered from it in SPEC section 4's order,
// kept right by store() and remove(), built again on reopening (a restart, a crash mid-write), and
// never trusted blindly (folders removed or added by hand) ; `keys verify`'s check.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "keystore/key_index.hpp"
#include "keystore/key_store.hpp"
#include "test_support.hpp"

namespace pa::keystore {
namespace {

namespace fs = std::filesystem;
const std::optional<std::string> kNoUser;

// Who holds the device's keys, as the lookup names them ("" for the legacy folder).
std::vector<std::string> owners(const KeyStore& store, const std::string& device) {
  std::vector<std::string> users;
  for (const DeviceFolder& folder : store.private_key_folders(device))
    users.push_back(folder.user.value_or(""));
  return users;
}

std::string problems_text(const std::vector<IndexProblem>& problems) {
  std::string text;
  for (const IndexProblem& problem : problems)
    text += problem.path.string() + ": " + problem.why + "\n";
  return text;
}

class KeyIndexTest : public ::testing::Test {
 protected:
  test::TempDir tmp_;
  fs::path root_ = fs::path(tmp_.path()) / "keys";
  KeyPair ec_ = generate_key_pair(KeyType::ec_p256);
  KeyPair ed_ = generate_key_pair(KeyType::ed25519);
};

TEST_F(KeyIndexTest, LookupsFollowWritesInSpecOrderWithoutScanning) {
  KeyStore store(root_);
  store.store(std::string("zoe"), "pH01", ec_, false);
  store.store(kNoUser, "pH01", ed_, false);
  store.store(std::string("alice"), "pH01", ec_, false);
  store.store(std::string("alice"), "other", ec_, false);
  EXPECT_EQ(owners(store, "pH01"), (std::vector<std::string>{"alice", "zoe", ""}));
  EXPECT_EQ(owners(store, "other"), (std::vector<std::string>{"alice"}));
  EXPECT_TRUE(owners(store, "nobody").empty());
  EXPECT_EQ(store.pairs_by_type(),
            (std::map<std::string, std::size_t>{{"ec-p256", 3}, {"ed25519", 1}}));

  // Replacing a pair changes its type, not the count.
  store.store(std::string("zoe"), "pH01", ed_, true);
  EXPECT_EQ(store.pairs_by_type(),
            (std::map<std::string, std::size_t>{{"ec-p256", 2}, {"ed25519", 2}}));
  ASSERT_TRUE(store.remove(std::string("alice"), "pH01", LegacyKeys::remove));
  EXPECT_EQ(owners(store, "pH01"), (std::vector<std::string>{"zoe"}));
  EXPECT_EQ(store.private_key_candidates("pH01"),
            (std::vector<fs::path>{root_ / "zoe" / "pH01" / kPrivateKeyFile}));
  EXPECT_EQ(store.index_rescans(), 0u) << "the index was right and yet the store was scanned";
  EXPECT_TRUE(store.check_index().empty()) << problems_text(store.check_index());
}

TEST_F(KeyIndexTest, ReopeningBuildsTheSameIndex) {
  {
    KeyStore store(root_);
    store.store(std::string("alice"), "pH01", ec_, false);
    store.store(std::string("bob"), "pH01", ed_, false);
    store.store(kNoUser, "legacy", ec_, false);
  }
  KeyStore reopened(root_);  // a restart
  EXPECT_EQ(owners(reopened, "pH01"), (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(owners(reopened, "legacy"), (std::vector<std::string>{""}));
  EXPECT_EQ(reopened.pairs_by_type(),
            (std::map<std::string, std::size_t>{{"ec-p256", 2}, {"ed25519", 1}}));
  EXPECT_EQ(reopened.device_count(), 3u);
  EXPECT_TRUE(reopened.check_index().empty()) << problems_text(reopened.check_index());
  EXPECT_TRUE(check_index(root_).empty()) << problems_text(check_index(root_));
  EXPECT_EQ(reopened.index_rescans(), 0u);
}

TEST_F(KeyIndexTest, AFolderRemovedByHandIsNoticedNotTrusted) {
  KeyStore store(root_);
  store.store(std::string("alice"), "pH01", ec_, false);
  store.store(std::string("bob"), "pH01", ec_, false);
  fs::remove_all(root_ / "alice" / "pH01");  // behind the store's back

  // check_index sees it before any lookup does.
  const std::vector<IndexProblem> problems = store.check_index();
  ASSERT_EQ(problems.size(), 1u) << problems_text(problems);
  EXPECT_EQ(problems[0].path, root_ / "alice" / "pH01");
  EXPECT_NE(problems[0].why.find("holds no private key"), std::string::npos);

  EXPECT_EQ(owners(store, "pH01"), (std::vector<std::string>{"bob"}));
  EXPECT_EQ(store.index_rescans(), 1u);
  EXPECT_TRUE(store.check_index().empty()) << problems_text(store.check_index());
  EXPECT_EQ(store.pairs_by_type(), (std::map<std::string, std::size_t>{{"ec-p256", 1}}));
}

TEST_F(KeyIndexTest, AnOnlyPrivateKeyRemovedByHandIsNoticed) {
  KeyStore store(root_);
  store.store(kNoUser, "pH01", ec_, false);
  fs::remove(root_ / "pH01" / kPrivateKeyFile);
  EXPECT_TRUE(owners(store, "pH01").empty());
  EXPECT_EQ(store.index_rescans(), 1u);
}

TEST_F(KeyIndexTest, ALegacyFolderRestoredByHandIsFound) {
  KeyStore store(root_);
  // The original agent's layout, copied in while the store is open.
  fs::create_directories(root_ / "pH01");
  fs::permissions(root_ / "pH01", fs::perms::owner_all);
  test::write_file((root_ / "pH01" / kPrivateKeyFile).string(), ec_.private_pem, 0600);
  test::write_file((root_ / "pH01" / kPublicKeyFile).string(), ec_.public_pem, 0644);
  EXPECT_EQ(owners(store, "pH01"), (std::vector<std::string>{""}));
  EXPECT_EQ(store.index_rescans(), 1u);
  EXPECT_EQ(store.pairs_by_type(), (std::map<std::string, std::size_t>{{"ec-p256", 1}}));
}

// A crash (SIGKILL) at any step of a pair write: the next open indexes exactly what is on disk,
// and lookups agree with the files.
class KeyIndexCrashTest : public KeyIndexTest, public ::testing::WithParamInterface<WriteStep> {};

TEST_P(KeyIndexCrashTest, AStoreKilledMidWriteReopensConsistent) {
  {
    KeyStore store(root_);
    store.store(std::string("alice"), "pH01", ec_, false);
  }
  for (const std::optional<std::string>& user :
       {std::optional<std::string>("alice"), std::optional<std::string>("bob"), kNoUser}) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      KeyStore store(root_);
      const WriteStep at = GetParam();
      store.set_write_step_hook([at](WriteStep step) {
        if (step == at) ::raise(SIGKILL);
      });
      store.store(user, "pH01", ed_, true);
      ::_exit(0);  // the hook's step never came (no backup without a previous pair)
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    KeyStore reopened(root_);
    EXPECT_TRUE(reopened.check_index().empty()) << problems_text(reopened.check_index());
    EXPECT_TRUE(check_index(root_).empty()) << problems_text(check_index(root_));
    for (const DeviceFolder& folder : reopened.private_key_folders("pH01"))
      EXPECT_TRUE(reopened.has_keys(folder.user, "pH01")) << folder.dir;
    EXPECT_EQ(reopened.private_key_folders("pH01").size(),
              static_cast<std::size_t>(reopened.has_keys(std::string("alice"), "pH01")) +
                  reopened.has_keys(std::string("bob"), "pH01") +
                  reopened.has_keys(kNoUser, "pH01"));
    EXPECT_EQ(reopened.index_rescans(), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryStep, KeyIndexCrashTest,
                         ::testing::Values(WriteStep::backup_written,
                                           WriteStep::private_temp_synced,
                                           WriteStep::public_temp_synced,
                                           WriteStep::private_renamed, WriteStep::public_renamed));

// Writes while the store is scanned again: none is lost (the index replays what the scan missed).
TEST_F(KeyIndexTest, WritesDuringARescanAreKept) {
  KeyStore store(root_);
  std::atomic<bool> writing{true};
  std::thread rescans([&] {
    while (writing) store.rescan_index();
  });
  for (int i = 0; i < 40; ++i) {
    const std::string device = "dev" + std::to_string(i);
    store.store(std::string("user") + std::to_string(i % 4), device, ec_, false);
    if (i % 5 == 0) store.remove(std::string("user") + std::to_string(i % 4), device);
  }
  writing = false;
  rescans.join();
  EXPECT_TRUE(store.check_index().empty()) << problems_text(store.check_index());
  EXPECT_EQ(store.pairs_by_type(), (std::map<std::string, std::size_t>{{"ec-p256", 32}}));
}

TEST(KeyIndexOrder, UsersByNameThenLegacy) {
  std::vector<IndexedPair> pairs;
  insert_in_order(pairs, {std::nullopt, KeyType::ec_p256});
  insert_in_order(pairs, {std::string("zoe"), KeyType::ec_p256});
  insert_in_order(pairs, {std::string("alice"), KeyType::ec_p256});
  insert_in_order(pairs, {std::string("alice"), KeyType::ed25519});  // replaces
  ASSERT_EQ(pairs.size(), 3u);
  EXPECT_EQ(pairs[0], (IndexedPair{std::string("alice"), KeyType::ed25519}));
  EXPECT_EQ(pairs[1].user, std::optional<std::string>("zoe"));
  EXPECT_EQ(pairs[2].user, std::nullopt);
}

}  // namespace
}  // namespace pa::keystore
