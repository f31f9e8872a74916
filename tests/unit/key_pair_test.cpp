// SPEC section 5: generated keys load unchanged in OpenSSL and PyCryptodome, and the fingerprint
// (SPEC section 3.2) is the one OpenSSL computes.
#include "keystore/key_pair.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace pa::keystore {

// Names test parameters in test names and messages (found by ADL; internal linkage so another
// test file may define its own).
static void PrintTo(KeyType type, std::ostream* out) {
  *out << to_string(type);
}

namespace {

std::string without_whitespace(std::string text) {
  text.erase(std::remove_if(text.begin(), text.end(),
                            [](unsigned char c) { return std::isspace(c) != 0; }),
             text.end());
  return text;
}

bool is_rsa(KeyType type) {
  return type == KeyType::rsa2048 || type == KeyType::rsa3072 || type == KeyType::rsa4096;
}

int rsa_bits(KeyType type) {
  switch (type) {
    case KeyType::rsa2048:
      return 2048;
    case KeyType::rsa3072:
      return 3072;
    case KeyType::rsa4096:
      return 4096;
    default:
      return 0;
  }
}

// Debian's python3-pycryptodome installs the "Cryptodome" package for the system interpreter,
// which may not be the first python3 on PATH (pyenv and the like).
std::string pycryptodome_python() {
  for (const char* candidate : {"/usr/bin/python3", "python3"}) {
    if (test::run_command(std::string(candidate) + " -c 'import Cryptodome' 2>/dev/null")
            .exit_code == 0) {
      return candidate;
    }
  }
  return {};
}

class KeyPairInterop : public ::testing::TestWithParam<KeyType> {};

// One test per key type, so an RSA-4096 key is generated once.
TEST_P(KeyPairInterop, LoadsInOpenSslAndPyCryptodome) {
  const KeyType type = GetParam();
  const KeyPair pair = generate_key_pair(type);
  EXPECT_EQ(pair.type, type);
  EXPECT_EQ(pair.private_pem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
  EXPECT_EQ(pair.public_pem.rfind("-----BEGIN PUBLIC KEY-----\n", 0), 0u);

  test::TempDir dir;
  const std::string private_path = dir.file("priv.pem");
  const std::string public_path = dir.file("pub.pem");
  test::write_file(private_path, pair.private_pem);
  test::write_file(public_path, pair.public_pem);

  // OpenSSL reads and checks both halves.
  EXPECT_EQ(test::run_command("openssl pkey -in " + test::shell_quote(private_path) +
                              " -check -noout >/dev/null 2>&1")
                .exit_code,
            0)
      << pair.private_pem;
  EXPECT_EQ(test::run_command("openssl pkey -pubin -in " + test::shell_quote(public_path) +
                              " -noout 2>&1")
                .exit_code,
            0)
      << pair.public_pem;

  // The public key is the one OpenSSL derives from the private key (stdout only: stderr is
  // dropped so that nothing but the PEM is compared).
  const test::CommandResult derived = test::run_command(
      "openssl pkey -in " + test::shell_quote(private_path) + " -pubout 2>/dev/null");
  ASSERT_EQ(derived.exit_code, 0);
  EXPECT_EQ(without_whitespace(derived.output), without_whitespace(pair.public_pem));

  // The fingerprint is the one OpenSSL computes over the DER.
  const test::CommandResult digest =
      test::run_command("openssl pkey -pubin -in " + test::shell_quote(public_path) +
                        " -outform DER 2>/dev/null | openssl dgst -sha256 -binary 2>/dev/null | "
                        "openssl base64 -A 2>/dev/null");
  ASSERT_EQ(digest.exit_code, 0);
  std::string expected = without_whitespace(digest.output);
  expected.erase(std::remove(expected.begin(), expected.end(), '='), expected.end());
  EXPECT_EQ(fingerprint(pair.public_pem), "SHA256:" + expected);

  // Reading the private key back gives the same pair and names its type.
  const KeyPair reread = key_pair_from_private_pem(pair.private_pem);
  EXPECT_EQ(reread.type, type);
  EXPECT_EQ(reread.private_pem, pair.private_pem);
  EXPECT_EQ(reread.public_pem, pair.public_pem);
  EXPECT_EQ(public_key_type(pair.public_pem), type);

  if (is_rsa(type)) {
    const test::CommandResult text = test::run_command(
        "openssl pkey -in " + test::shell_quote(private_path) + " -noout -text 2>/dev/null");
    ASSERT_EQ(text.exit_code, 0);
    EXPECT_NE(text.output.find("(" + std::to_string(rsa_bits(type)) + " bit"), std::string::npos)
        << text.output.substr(0, 200);
    // Crypto++'s default exponent is 17; SPEC wants the usual 65537.
    EXPECT_NE(text.output.find("publicExponent: 65537"), std::string::npos);
  }

  // PyCryptodome 3.11 (Debian 12) has no Ed25519 import (ECC.import_key answers "Unsupported ECC
  // purpose (OID: 1.3.101.112)"), so ed25519 is checked with OpenSSL only.
  if (type == KeyType::ed25519) return;
  const std::string python = pycryptodome_python();
  ASSERT_FALSE(python.empty()) << "PyCryptodome (python3-pycryptodome) is not installed";
  const std::string script = dir.file("check.py");
  if (is_rsa(type)) {
    test::write_file(script,
                     "import sys\n"
                     "from Cryptodome.PublicKey import RSA\n"
                     "priv = RSA.import_key(open(sys.argv[1]).read())\n"
                     "pub = RSA.import_key(open(sys.argv[2]).read())\n"
                     "assert priv.has_private() and not pub.has_private()\n"
                     "assert priv.publickey() == pub\n"
                     "print(priv.size_in_bits(), priv.e)\n");
  } else {
    test::write_file(script,
                     "import sys\n"
                     "from Cryptodome.PublicKey import ECC\n"
                     "priv = ECC.import_key(open(sys.argv[1]).read())\n"
                     "pub = ECC.import_key(open(sys.argv[2]).read())\n"
                     "assert priv.has_private() and not pub.has_private()\n"
                     "assert priv.public_key() == pub\n"
                     "print(priv.curve)\n");
  }
  // stdout is compared; stderr goes to a file that is shown when the script fails.
  const std::string py_errors = dir.file("check.err");
  const test::CommandResult py = test::run_command(
      python + " " + test::shell_quote(script) + " " + test::shell_quote(private_path) + " " +
      test::shell_quote(public_path) + " 2>" + test::shell_quote(py_errors));
  ASSERT_EQ(py.exit_code, 0) << py.output << test::read_file(py_errors);
  if (is_rsa(type)) {
    EXPECT_EQ(without_whitespace(py.output), std::to_string(rsa_bits(type)) + "65537");
  } else {
    EXPECT_EQ(without_whitespace(py.output), "NISTP-256");
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, KeyPairInterop,
                         ::testing::Values(KeyType::rsa2048, KeyType::rsa3072, KeyType::rsa4096,
                                           KeyType::ec_p256, KeyType::ed25519),
                         [](const ::testing::TestParamInfo<KeyType>& info) {
                           std::string name(to_string(info.param));
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// Keys written by PyCryptodome (the original agent's library) are read here: RSA in PKCS#1 (its
// default) and PKCS#8, P-256 in PKCS#8; what we derive is what PyCryptodome exports as public.
TEST(KeyPair, ReadsPyCryptodomeKeys) {
  const std::string python = pycryptodome_python();
  ASSERT_FALSE(python.empty()) << "PyCryptodome (python3-pycryptodome) is not installed";
  test::TempDir dir;
  const std::string script = dir.file("make.py");
  test::write_file(script,
                   "import sys\n"
                   "from Cryptodome.PublicKey import RSA, ECC\n"
                   "d = sys.argv[1]\n"
                   "rsa = RSA.generate(2048)\n"
                   "open(d + '/rsa1.pem', 'wb').write(rsa.export_key())\n"
                   "open(d + '/rsa8.pem', 'wb').write(rsa.export_key(pkcs=8))\n"
                   "open(d + '/rsa.pub', 'wb').write(rsa.publickey().export_key())\n"
                   "ec = ECC.generate(curve='P-256')\n"
                   "open(d + '/ec.pem', 'w').write(ec.export_key(format='PEM'))\n"
                   "open(d + '/ec.pub', 'w').write(ec.public_key().export_key(format='PEM'))\n");
  const test::CommandResult made = test::run_command(python + " " + test::shell_quote(script) +
                                                     " " + test::shell_quote(dir.path()));
  ASSERT_EQ(made.exit_code, 0) << made.output;

  const std::string rsa_public = test::read_file(dir.file("rsa.pub"));
  for (const char* name : {"rsa1.pem", "rsa8.pem"}) {
    SCOPED_TRACE(name);
    const KeyPair pair = key_pair_from_private_pem(test::read_file(dir.file(name)));
    EXPECT_EQ(pair.type, KeyType::rsa2048);
    EXPECT_EQ(pair.private_pem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
    EXPECT_EQ(without_whitespace(pair.public_pem), without_whitespace(rsa_public));
    EXPECT_EQ(fingerprint(pair.public_pem), fingerprint(rsa_public));
  }
  const KeyPair ec = key_pair_from_private_pem(test::read_file(dir.file("ec.pem")));
  EXPECT_EQ(ec.type, KeyType::ec_p256);
  EXPECT_EQ(without_whitespace(ec.public_pem),
            without_whitespace(test::read_file(dir.file("ec.pub"))));
}

TEST(KeyPair, GarbageIsKeyError) {
  const KeyPair pair = generate_key_pair(KeyType::ec_p256);
  const std::string truncated = pair.private_pem.substr(0, 60) + "\n-----END PRIVATE KEY-----\n";
  const std::vector<std::string> garbage = {
      "",
      "garbage",
      "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
      "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n",
      "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
      "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGB4JSLeyM7yXt3oh6vLqwizfg9KMRV68Mira",
      truncated,
      pair.public_pem,  // a public key is not a private key
  };
  for (const std::string& text : garbage) {
    EXPECT_THROW(key_pair_from_private_pem(text), KeyError) << text;
  }
  for (const std::string& text : {std::string("garbage"), pair.private_pem, std::string()}) {
    EXPECT_THROW(fingerprint(text), KeyError) << text;
    EXPECT_THROW(public_key_type(text), KeyError) << text;
  }
}

TEST(KeyPair, RejectsUnsupportedKeys) {
  test::TempDir dir;
  const std::string p384 = dir.file("p384.pem");
  const std::string rsa1024 = dir.file("rsa1024.pem");
  const test::CommandResult made_p384 =
      test::run_command("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out " +
                        test::shell_quote(p384));
  ASSERT_EQ(made_p384.exit_code, 0) << made_p384.output;
  const test::CommandResult made_rsa1024 =
      test::run_command("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " +
                        test::shell_quote(rsa1024));
  ASSERT_EQ(made_rsa1024.exit_code, 0) << made_rsa1024.output;
  EXPECT_THROW(key_pair_from_private_pem(test::read_file(p384)), KeyError);
  EXPECT_THROW(key_pair_from_private_pem(test::read_file(rsa1024)), KeyError);
}

TEST(KeyPair, FreshPairsDiffer) {
  const KeyPair a = generate_key_pair(KeyType::ed25519);
  const KeyPair b = generate_key_pair(KeyType::ed25519);
  EXPECT_NE(a.private_pem, b.private_pem);
  EXPECT_NE(fingerprint(a.public_pem), fingerprint(b.public_pem));
}

TEST(KeyPair, KeyTypeNames) {
  for (KeyType type :
       {KeyType::rsa2048, KeyType::rsa3072, KeyType::rsa4096, KeyType::ec_p256, KeyType::ed25519}) {
    EXPECT_EQ(parse_key_type(to_string(type)), type);
  }
  EXPECT_EQ(to_string(KeyType::rsa2048), "rsa-2048");
  EXPECT_EQ(to_string(KeyType::ec_p256), "ec-p256");
  EXPECT_EQ(parse_key_type("ed25519"), KeyType::ed25519);
  EXPECT_EQ(parse_key_type("rsa-1024"), std::nullopt);
  EXPECT_EQ(parse_key_type("RSA-2048"), std::nullopt);
  EXPECT_EQ(parse_key_type(""), std::nullopt);
}

}  // namespace
}  // namespace pa::keystore

namespace pa::keystore {
namespace {

TEST(Secret, WipeOverwritesTheCharactersBeforeClearing) {
  std::string text(64, 'k');  // on the heap: clear() keeps the buffer, so it can be looked at
  const char* data = text.data();
  Secret::wipe(text);
  EXPECT_TRUE(text.empty());
  for (std::size_t i = 0; i < 64; ++i) ASSERT_EQ(data[i], '\0') << i;
}

TEST(Secret, TakeKeepsTheTextAndWipesWhereItCameFrom) {
  std::string text = "-----BEGIN PRIVATE KEY-----\nsecret material of some length\n";
  const char* data = text.data();
  const std::size_t size = text.size();
  const Secret secret = Secret::take(std::move(text));
  EXPECT_EQ(secret.view(), "-----BEGIN PRIVATE KEY-----\nsecret material of some length\n");
  EXPECT_EQ(secret.c_str()[secret.size()], '\0') << "readable by C code where it lies";
  for (std::size_t i = 0; i < size; ++i) ASSERT_EQ(data[i], '\0') << i;
}

}  // namespace
}  // namespace pa::keystore
