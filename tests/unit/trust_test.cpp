// SPEC sections 3.2 and 5, the key store's side of trust: certificate requests made with every key
// type (checked by the openssl CLI, not by our code), the checks a certificate passes before it is
// stored (made by openssl here: a CA, an intermediate, leaves), and key age: durations, the
// rotation rule at its boundaries, and the ages of a store's devices.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <utime.h>

#include <filesystem>
#include <string>

#include "keystore/key_pair.hpp"
#include "keystore/key_store.hpp"
#include "keystore/rotation.hpp"
#include "keystore/x509.hpp"
#include "test_pki.hpp"
#include "test_support.hpp"

namespace pa::keystore {
namespace {

namespace fs = std::filesystem;
using test::run_command;
using test::shell_quote;

constexpr std::int64_t kDay = 86400;
constexpr KeyType kKeyTypes[] = {KeyType::rsa2048, KeyType::rsa3072, KeyType::rsa4096,
                                 KeyType::ec_p256, KeyType::ed25519};

// openssl's view of a PEM file: `openssl <command> -in FILE <arguments>`.
test::CommandResult openssl_on(const std::string& command, const std::string& file,
                               const std::string& arguments) {
  return run_command("openssl " + command + " -in " + shell_quote(file) + " " + arguments +
                     " 2>&1");
}

// ---- certificate requests ----

TEST(CertificateRequest, EveryKeyTypeMakesOneOpensslVerifiesWithTheKeyAndSubject) {
  test::TempDir dir;
  for (const KeyType type : kKeyTypes) {
    SCOPED_TRACE(std::string(to_string(type)));
    const KeyPair pair = generate_key_pair(type);
    const std::string file = dir.file("request.csr");
    test::write_file(file, make_csr(pair.private_pem, "pH-01.a_b", std::string("42")));

    const auto verified = openssl_on("req", file, "-verify -noout");
    EXPECT_EQ(verified.exit_code, 0) << verified.output;
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, "verify OK", verified.output);
    EXPECT_EQ(openssl_on("req", file, "-noout -subject -nameopt compat").output,
              "subject=/CN=pH-01.a_b/OU=42\n");
    EXPECT_EQ(openssl_on("req", file, "-noout -pubkey").output, pair.public_pem);
  }
}

TEST(CertificateRequest, WithoutAUserTheSubjectIsTheDeviceAlone) {
  test::TempDir dir;
  const std::string file = dir.file("request.csr");
  test::write_file(file,
                   make_csr(generate_key_pair(KeyType::ec_p256).private_pem, "pH01", std::nullopt));
  EXPECT_EQ(openssl_on("req", file, "-noout -subject -nameopt compat").output,
            "subject=/CN=pH01\n");
}

TEST(CertificateRequest, NotAPrivateKeyIsAKeyError) {
  EXPECT_THROW(make_csr("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "pH01",
                        std::nullopt),
               KeyError);
  EXPECT_THROW(make_csr(generate_key_pair(KeyType::ec_p256).public_pem, "pH01", std::nullopt),
               KeyError);
}

// ---- certificate checks ----

class CertificateCheck : public ::testing::Test {
 protected:
  // A device key, its CSR made by make_csr, and a ten-day leaf for it from the root CA.
  void SetUp() override {
    root = pki.root("root-ca");
    pair = generate_key_pair(KeyType::ec_p256);
    csr = pki.file("device.csr");
    test::write_file(csr, make_csr(pair.private_pem, "pH01", std::nullopt));
    leaf = test::read_file(pki.sign(csr, root, 10));
    const auto info = read_certificate_info(leaf);
    ASSERT_TRUE(info);
    not_before = info->not_before;
    not_after = info->not_after;
  }

  std::optional<std::string> ca_file() const { return root.cert; }

  // The reason check_certificate gives, or "accepted".
  std::string reason(const std::string& chain, std::int64_t now,
                     const std::optional<std::string>& ca) const {
    try {
      check_certificate(chain, pair.public_pem, now, ca);
      return "accepted";
    } catch (const CertificateError& error) {
      return error.what();
    }
  }

  test::TestPki pki;
  test::TestPki::Ca root;
  KeyPair pair;
  std::string csr;
  std::string leaf;
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
};

TEST_F(CertificateCheck, LeafForTheKeyWithinItsDatesFromTheCaPasses) {
  EXPECT_EQ(not_after - not_before, 10 * kDay);
  const std::int64_t now = not_before + kDay;
  const CertificateInfo info = check_certificate(leaf, pair.public_pem, now, ca_file());
  EXPECT_EQ(info.subject, "CN=pH01");
  EXPECT_EQ(info.not_before, not_before);
  EXPECT_EQ(info.not_after, not_after);
  // Without PROVISION_CA_FILE the key and the dates are still checked, the issuer is not.
  EXPECT_EQ(reason(leaf, now, std::nullopt), "accepted");
  // Valid from its first second; expired at its last, as OpenSSL's chain check and the rotation
  // rule (rotation.hpp) count it, with or without a CA file.
  EXPECT_EQ(reason(leaf, not_before, ca_file()), "accepted");
  EXPECT_EQ(reason(leaf, not_after - 1, ca_file()), "accepted");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "expired at", reason(leaf, not_after, ca_file()));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "expired at", reason(leaf, not_after, std::nullopt));
}

TEST_F(CertificateCheck, DatesAreCheckedAtTheMomentGiven) {
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not valid before",
                      reason(leaf, not_before - 1, ca_file()));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "expired at", reason(leaf, not_after + 1, ca_file()));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "expired at",
                      reason(leaf, not_after + 1, std::nullopt));
}

TEST_F(CertificateCheck, AnotherKeysLeafIsRefusedNamingIt) {
  const std::string other = test::read_file(pki.sign(pki.new_csr("other", "pH01"), root, 10));
  const std::string why = reason(other, not_before + 1, ca_file());
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "for another key", why);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "CN=pH01", why);
}

TEST_F(CertificateCheck, AnotherCasLeafDoesNotChain) {
  const auto other_root = pki.root("other-ca");
  const std::string other = test::read_file(pki.sign(csr, other_root, 10));
  EXPECT_EQ(reason(other, not_before + 1, std::nullopt), "accepted");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "does not chain to PROVISION_CA_FILE",
                      reason(other, not_before + 1, ca_file()));
}

TEST_F(CertificateCheck, IntermediateGivenAfterTheLeafCompletesTheChain) {
  const auto intermediate = pki.intermediate(root, "site-ca");
  const std::string by_intermediate = test::read_file(pki.sign(csr, intermediate, 10));
  const auto info = read_certificate_info(by_intermediate);
  ASSERT_TRUE(info);
  const std::int64_t now = info->not_before + 1;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "does not chain",
                      reason(by_intermediate, now, ca_file()));
  EXPECT_EQ(reason(by_intermediate + test::read_file(intermediate.cert), now, ca_file()),
            "accepted");
  // The chain's order matters: the leaf first.
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "another key",
                      reason(test::read_file(intermediate.cert) + by_intermediate, now, ca_file()));
}

TEST_F(CertificateCheck, NotACertificateOrAnUnreadableCaFileIsRefusedWithTheReason) {
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "no PEM certificate",
                      reason("", not_before + 1, ca_file()));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "PUBLIC KEY block",
                      reason(pair.public_pem, not_before + 1, ca_file()));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "cannot read PROVISION_CA_FILE",
                      reason(leaf, not_before + 1, pki.file("missing.pem")));
  EXPECT_FALSE(read_certificate_info("no certificate here"));
}

// Only certificates are stored (sensor_cert.pem is world-readable): a private key sent along by
// mistake, before or after the leaf, is refused, naming the block.
TEST_F(CertificateCheck, AnythingButCertificateBlocksIsRefused) {
  const std::int64_t now = not_before + 1;
  for (const std::string& chain : {leaf + pair.private_pem, pair.private_pem + leaf,
                                   leaf + test::read_file(pki.file("root-ca.key"))}) {
    const std::string why = reason(chain, now, ca_file());
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, "PRIVATE KEY", why);
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, "only certificates", why);
  }
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "CERTIFICATE REQUEST",
                      reason(leaf + test::read_file(csr), now, ca_file()));
  // Text around the blocks (as `openssl x509 -text` or a bundle's comments leave) is no block.
  EXPECT_EQ(reason("# the device's certificate\n" + leaf, now, ca_file()), "accepted");
}

// ---- certificates in the store ----

// A certificate goes with the pair it certifies: to the backup generation on a replacement that
// keeps one, away on one that does not, and never stays beside a backup pair it does not certify.
TEST(StoredCertificate, FollowsThePairItCertifies) {
  test::TempDir tmp;
  const fs::path root = fs::path(tmp.path()) / "keys";
  const fs::path dir = root / "alice" / "pH01";
  const std::optional<std::string> user("alice");
  KeyStore store(root);
  store.store(user, "pH01", generate_key_pair(KeyType::ec_p256), false);
  ASSERT_TRUE(store.store_certificate(user, "pH01", "first generation's certificate\n"));

  store.store(user, "pH01", generate_key_pair(KeyType::ec_p256), true);
  EXPECT_FALSE(fs::exists(dir / "sensor_cert.pem"));
  EXPECT_EQ(test::read_file(dir / "sensor_cert.prev.pem"), "first generation's certificate\n");

  // The backup is now the second generation, which had no certificate.
  store.store(user, "pH01", generate_key_pair(KeyType::ec_p256), true);
  EXPECT_FALSE(fs::exists(dir / "sensor_cert.pem"));
  EXPECT_FALSE(fs::exists(dir / "sensor_cert.prev.pem"));

  // Replaced without a backup: the backup pair stays the second generation, without certificate.
  ASSERT_TRUE(store.store_certificate(user, "pH01", "third generation's certificate\n"));
  store.store(user, "pH01", generate_key_pair(KeyType::ec_p256), false);
  EXPECT_FALSE(fs::exists(dir / "sensor_cert.pem"));
  EXPECT_FALSE(fs::exists(dir / "sensor_cert.prev.pem"));
}

// ---- key age ----

TEST(Duration, ParsesAnIntegerWithItsUnit) {
  EXPECT_EQ(parse_duration("30s"), 30);
  EXPECT_EQ(parse_duration("90m"), 90 * 60);
  EXPECT_EQ(parse_duration("12h"), 12 * 3600);
  EXPECT_EQ(parse_duration("365d"), 365 * kDay);
  for (const char* bad : {"", "d", "10", "1w", "0d", "-1d", "+1d", "1.5d", " 1d", "1d ", "1D",
                          "1 d", "99999999999999999999d", "20000000d"})
    EXPECT_EQ(parse_duration(bad), std::nullopt) << '"' << bad << '"';
}

TEST(Duration, FormatsInTheLargestUnitThatDividesIt) {
  EXPECT_EQ(format_duration(365 * kDay), "365d");
  EXPECT_EQ(format_duration(36 * 3600), "36h");
  EXPECT_EQ(format_duration(120), "2m");
  EXPECT_EQ(format_duration(90), "90s");
  for (const char* text : {"30s", "90m", "12h", "365d"})
    EXPECT_EQ(format_duration(*parse_duration(text)), text);
}

TEST(RotationDue, KeyOlderThanTheMaximumIsDue) {
  const std::int64_t created = 1'000'000'000;
  EXPECT_FALSE(rotation_due(created, std::nullopt, std::nullopt, created + 1000 * kDay));
  EXPECT_FALSE(rotation_due(created, std::nullopt, kDay, created + kDay));
  const auto due = rotation_due(created, std::nullopt, kDay, created + kDay + 1);
  ASSERT_TRUE(due);
  EXPECT_EQ(due->age_s, kDay + 1);
  EXPECT_EQ(due->reason, "the key is older than PROVISION_KEY_MAX_AGE=1d");
  EXPECT_FALSE(due->not_after);
  // A clock behind the key's time (a Pi before its clock synced): age 0, not due.
  EXPECT_FALSE(rotation_due(created, std::nullopt, kDay, created - 10 * kDay));
}

TEST(RotationDue, CertificatePastEightyPercentOfItsLifetimeIsDue) {
  const std::int64_t created = 1'000'000'000;
  const CertificateInfo certificate{"CN=pH01", created, created + 100 * kDay};
  EXPECT_FALSE(rotation_due(created, certificate, std::nullopt, created + 80 * kDay - 1));
  auto due = rotation_due(created, certificate, std::nullopt, created + 80 * kDay);
  ASSERT_TRUE(due);
  EXPECT_EQ(due->reason, "the certificate is past 80% of its lifetime");
  EXPECT_EQ(due->not_after, certificate.not_after);
  EXPECT_EQ(due->age_s, 80 * kDay);
  due = rotation_due(created, certificate, std::nullopt, certificate.not_after);
  ASSERT_TRUE(due);
  EXPECT_EQ(due->reason, "the certificate has expired");
  // Due by the key's age, the certificate's end still goes along.
  due = rotation_due(created, certificate, 10 * kDay, created + 11 * kDay);
  ASSERT_TRUE(due);
  EXPECT_EQ(due->not_after, certificate.not_after);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "PROVISION_KEY_MAX_AGE=10d", due->reason);
}

TEST(KeyAges, EachDeviceOfTheStoreWithItsKeyTimeAndCertificate) {
  test::TempDir tmp;
  const fs::path root = fs::path(tmp.path()) / "keys";
  KeyStore store(root);
  const KeyPair pair = generate_key_pair(KeyType::ec_p256);
  store.store(std::nullopt, "legacy", pair, false);
  store.store(std::string("alice"), "pH01", generate_key_pair(KeyType::ec_p256), false);
  // The legacy key was made 3 days ago.
  const fs::path legacy_key = root / "legacy" / "sensor_private.pem";
  struct stat st {};
  ASSERT_EQ(::stat(legacy_key.c_str(), &st), 0);
  const std::int64_t now = st.st_mtim.tv_sec;
  const struct utimbuf three_days_ago {
    static_cast<time_t>(now - 3 * kDay), static_cast<time_t>(now - 3 * kDay)
  };
  ASSERT_EQ(::utime(legacy_key.c_str(), &three_days_ago), 0);
  // alice's pH01 has a certificate from now to now + 10 days.
  test::TestPki pki;
  const auto ca = pki.root("ca");
  const std::string csr = pki.file("pH01.csr");
  test::write_file(csr, make_csr(*store.read_private_key(std::string("alice"), "pH01"), "pH01",
                                 std::string("alice")));
  const std::string certificate = test::read_file(pki.sign(csr, ca, 10));
  ASSERT_TRUE(store.store_certificate(std::string("alice"), "pH01", certificate));
  const auto info = read_certificate_info(certificate);
  ASSERT_TRUE(info);

  auto ages = key_ages(root, 2 * kDay, now);
  ASSERT_EQ(ages.size(), 2u);
  EXPECT_EQ(ages[0].folder.device, "legacy");
  EXPECT_FALSE(ages[0].folder.user);
  EXPECT_EQ(ages[0].created, now - 3 * kDay);
  EXPECT_FALSE(ages[0].certificate);
  ASSERT_TRUE(ages[0].due);
  EXPECT_EQ(ages[0].due->age_s, 3 * kDay);
  EXPECT_EQ(ages[1].folder.device, "pH01");
  EXPECT_EQ(ages[1].folder.user, std::optional<std::string>("alice"));
  ASSERT_TRUE(ages[1].certificate);
  EXPECT_EQ(ages[1].certificate->not_after, info->not_after);
  EXPECT_FALSE(ages[1].due);

  // Nine days later the certificate is past 80%: due, with its end.
  ages = key_ages(root, std::nullopt, info->not_before + 9 * kDay);
  ASSERT_EQ(ages.size(), 2u);
  EXPECT_FALSE(ages[0].due);
  ASSERT_TRUE(ages[1].due);
  EXPECT_EQ(ages[1].due->not_after, info->not_after);
}

TEST(KeyAges, MissingRootHasNoDevices) {
  test::TempDir tmp;
  EXPECT_TRUE(key_ages(fs::path(tmp.path()) / "none", kDay, 0).empty());
}

}  // namespace
}  // namespace pa::keystore
