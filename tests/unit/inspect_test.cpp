// Read-only key store inspection (keystore/inspect.hpp), as `check` and `keys` use it: each
// problem of a broken store as its kind, file and facts, the device's status, and nothing on
// disk changed.
#include "keystore/inspect.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "keystore/key_pair.hpp"
#include "keystore/key_store.hpp"
#include "test_support.hpp"

namespace pa::keystore {
namespace {

namespace fs = std::filesystem;

class InspectTest : public ::testing::Test {
 protected:
  test::TempDir tmp_;
  fs::path root_ = fs::path(tmp_.path()) / "keys";

  // A sound pair for each device, made through the store as the agent makes them.
  void store(const std::optional<std::string>& user, const std::string& device,
             bool backup = false) {
    KeyStore store(root_);
    store.store(user, device, generate_key_pair(KeyType::ec_p256), false);
    if (backup) store.store(user, device, generate_key_pair(KeyType::ec_p256), true);
  }

  const DeviceReport& device(const std::vector<DeviceReport>& reports, const std::string& name) {
    const auto found = std::find_if(reports.begin(), reports.end(),
                                    [&](const DeviceReport& r) { return r.folder.device == name; });
    EXPECT_NE(found, reports.end()) << name;
    return *found;
  }
};

bool has(const DeviceReport& report, ProblemKind kind, KeyFile file) {
  return std::any_of(report.problems.begin(), report.problems.end(),
                     [&](const KeyProblem& p) { return p.kind == kind && p.file == file; });
}

TEST_F(InspectTest, SoundStoreHasNoProblemsAndNamesTypeAndFingerprint) {
  store(std::string("alice"), "pH01");
  store(std::nullopt, "ec01", true);
  const auto reports = inspect_store(root_);
  ASSERT_EQ(reports.size(), 2u);
  for (const DeviceReport& report : reports) {
    EXPECT_TRUE(report.problems.empty()) << report.label();
    EXPECT_EQ(report.status(), KeyStatus::ok);
    EXPECT_EQ(report.type, KeyType::ec_p256);
    EXPECT_TRUE(report.private_key_usable);
    EXPECT_EQ(report.fingerprint, fingerprint(report.public_pem));
    EXPECT_EQ(report.private_key.mode, 0600u);
    EXPECT_EQ(report.public_key.mode, 0644u);
  }
  EXPECT_EQ(device(reports, "pH01").label(), "alice/pH01");
  EXPECT_TRUE(device(reports, "ec01").private_backup.exists);
  EXPECT_FALSE(inspect_root(root_, std::nullopt));
}

TEST_F(InspectTest, EachBreakageIsItsKindWithItsFactsAndNothingIsRepaired) {
  store(std::nullopt, "loose");
  store(std::nullopt, "nopriv");
  store(std::nullopt, "garbage");
  store(std::nullopt, "swapped");
  store(std::nullopt, "link");
  store(std::nullopt, "badbackup", true);
  ASSERT_EQ(::chmod((root_ / "loose" / kPublicKeyFile).c_str(), 0666), 0);
  fs::remove(root_ / "nopriv" / kPrivateKeyFile);
  test::write_file((root_ / "garbage" / kPrivateKeyFile).string(), "not a key\n", 0600);
  const std::string other = generate_key_pair(KeyType::ec_p256).public_pem;
  test::write_file((root_ / "swapped" / kPublicKeyFile).string(), other, 0644);
  fs::remove(root_ / "link" / kPrivateKeyFile);
  fs::create_symlink("/etc/passwd", root_ / "link" / kPrivateKeyFile);
  test::write_file((root_ / "badbackup" / kPrivateBackupFile).string(), "junk", 0600);
  const auto before = test::list_tree(root_.string());

  const auto reports = inspect_store(root_);
  const DeviceReport& loose = device(reports, "loose");
  ASSERT_EQ(loose.problems.size(), 1u);
  EXPECT_EQ(loose.problems[0].kind, ProblemKind::loose_mode);
  EXPECT_EQ(loose.problems[0].file, KeyFile::public_key);
  EXPECT_EQ(loose.problems[0].mode, 0666u);
  EXPECT_EQ(loose.problems[0].forbidden, 022u);
  EXPECT_EQ(loose.problems[0].wanted, 0644u);
  EXPECT_EQ(loose.status(), KeyStatus::loose_mode);

  const DeviceReport& nopriv = device(reports, "nopriv");
  EXPECT_TRUE(has(nopriv, ProblemKind::missing, KeyFile::private_key));
  EXPECT_EQ(nopriv.status(), KeyStatus::missing_private);
  EXPECT_FALSE(nopriv.fingerprint.empty());  // the stored public key's

  const DeviceReport& garbage = device(reports, "garbage");
  EXPECT_TRUE(has(garbage, ProblemKind::not_a_key, KeyFile::private_key));
  EXPECT_EQ(garbage.status(), KeyStatus::corrupt);
  EXPECT_FALSE(garbage.private_key_usable);

  const DeviceReport& swapped = device(reports, "swapped");
  ASSERT_TRUE(has(swapped, ProblemKind::mismatch, KeyFile::public_key));
  EXPECT_EQ(swapped.problems[0].fingerprint, fingerprint(other));
  EXPECT_EQ(swapped.problems[0].expected_fingerprint, swapped.fingerprint);
  EXPECT_EQ(swapped.status(), KeyStatus::mismatch);

  const DeviceReport& link = device(reports, "link");
  EXPECT_TRUE(has(link, ProblemKind::not_regular, KeyFile::private_key));
  EXPECT_EQ(link.status(), KeyStatus::corrupt);

  const DeviceReport& badbackup = device(reports, "badbackup");
  EXPECT_TRUE(has(badbackup, ProblemKind::not_a_key, KeyFile::private_backup));
  EXPECT_EQ(badbackup.status(), KeyStatus::bad_backup);

  EXPECT_EQ(test::list_tree(root_.string()), before);
  EXPECT_EQ(test::file_mode((root_ / "loose" / kPublicKeyFile).string()), 0666);
}

TEST_F(InspectTest, WorstProblemIsTheStatus) {
  store(std::nullopt, "both");
  ASSERT_EQ(::chmod((root_ / "both" / kPrivateKeyFile).c_str(), 0644), 0);
  test::write_file((root_ / "both" / kPublicKeyFile).string(), "not a key", 0644);
  const auto reports = inspect_store(root_);
  const DeviceReport& both = device(reports, "both");
  EXPECT_TRUE(has(both, ProblemKind::loose_mode, KeyFile::private_key));
  EXPECT_TRUE(has(both, ProblemKind::not_a_key, KeyFile::public_key));
  EXPECT_EQ(both.status(), KeyStatus::mismatch);
  EXPECT_EQ(to_string(both.status()), "mismatch");
  EXPECT_EQ(to_string(KeyStatus::missing_private), "missing-private");
}

TEST_F(InspectTest, RootProblemsAreKindsWithTheKeyStoresOwnFix) {
  EXPECT_FALSE(inspect_root(root_, std::nullopt));  // missing: the agent creates it
  fs::create_directories(root_);
  ASSERT_EQ(::chmod(root_.c_str(), 0777), 0);
  const auto loose = inspect_root(root_, std::nullopt);
  ASSERT_TRUE(loose);
  EXPECT_EQ(loose->kind, RootProblem::Kind::permission);
  EXPECT_NE(loose->fix.find("chmod"), std::string::npos) << loose->fix;
  EXPECT_NE(loose->fix.find(root_.string()), std::string::npos) << loose->fix;
  ASSERT_EQ(::chmod(root_.c_str(), 0700), 0);

  const auto group = inspect_root(root_, std::string("pa-no-such-group-x"));
  ASSERT_TRUE(group);
  EXPECT_EQ(group->kind, RootProblem::Kind::unknown_group);

  const fs::path file = fs::path(tmp_.path()) / "file";
  test::write_file(file.string(), "x");
  const auto not_folder = inspect_root(file, std::nullopt);
  ASSERT_TRUE(not_folder);
  EXPECT_EQ(not_folder->kind, RootProblem::Kind::not_a_folder);
}

}  // namespace
}  // namespace pa::keystore
