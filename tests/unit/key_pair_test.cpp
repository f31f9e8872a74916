// SPEC section 5: generated keys load unchanged in OpenSSL and PyCryptodome, and the fingerprint
// (SPEC section 3.2) is the one OpenSSL computes.
#include "keystore/key_pair.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace pa::keystore {

// Names test parameters in test names and messages (found by ADL; internal linkage so another
// test file may define its own).
static void PrintTo(KeyType type, std::ostream* out) {
  *out << to_string(type);
}

namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "pa-key-pair-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct CommandResult {
  int exit_code;
  std::string output;  // stdout only
};

CommandResult run(const std::string& command) {
  CommandResult result{-1, {}};
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer{};
  std::size_t got = 0;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), got);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string quoted(const fs::path& path) {
  return "'" + path.string() + "'";
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

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
    if (run(std::string(candidate) + " -c 'import Cryptodome' 2>/dev/null").exit_code == 0) {
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

  TempDir dir;
  const fs::path private_path = dir.path() / "priv.pem";
  const fs::path public_path = dir.path() / "pub.pem";
  write_text(private_path, pair.private_pem);
  write_text(public_path, pair.public_pem);

  // OpenSSL reads and checks both halves.
  EXPECT_EQ(
      run("openssl pkey -in " + quoted(private_path) + " -check -noout >/dev/null 2>&1").exit_code,
      0)
      << pair.private_pem;
  EXPECT_EQ(run("openssl pkey -pubin -in " + quoted(public_path) + " -noout 2>&1").exit_code, 0)
      << pair.public_pem;

  // The public key is the one OpenSSL derives from the private key.
  const CommandResult derived = run("openssl pkey -in " + quoted(private_path) + " -pubout");
  ASSERT_EQ(derived.exit_code, 0);
  EXPECT_EQ(without_whitespace(derived.output), without_whitespace(pair.public_pem));

  // The fingerprint is the one OpenSSL computes over the DER.
  CommandResult digest = run("openssl pkey -pubin -in " + quoted(public_path) +
                             " -outform DER | openssl dgst -sha256 -binary | openssl base64 -A");
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
    const CommandResult text = run("openssl pkey -in " + quoted(private_path) + " -noout -text");
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
  const fs::path script = dir.path() / "check.py";
  if (is_rsa(type)) {
    write_text(script,
               "import sys\n"
               "from Cryptodome.PublicKey import RSA\n"
               "priv = RSA.import_key(open(sys.argv[1]).read())\n"
               "pub = RSA.import_key(open(sys.argv[2]).read())\n"
               "assert priv.has_private() and not pub.has_private()\n"
               "assert priv.publickey() == pub\n"
               "print(priv.size_in_bits(), priv.e)\n");
  } else {
    write_text(script,
               "import sys\n"
               "from Cryptodome.PublicKey import ECC\n"
               "priv = ECC.import_key(open(sys.argv[1]).read())\n"
               "pub = ECC.import_key(open(sys.argv[2]).read())\n"
               "assert priv.has_private() and not pub.has_private()\n"
               "assert priv.public_key() == pub\n"
               "print(priv.curve)\n");
  }
  const CommandResult py =
      run(python + " " + quoted(script) + " " + quoted(private_path) + " " + quoted(public_path));
  ASSERT_EQ(py.exit_code, 0) << py.output;
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
  TempDir dir;
  const fs::path script = dir.path() / "make.py";
  write_text(script,
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
  const CommandResult made = run(python + " " + quoted(script) + " " + quoted(dir.path()));
  ASSERT_EQ(made.exit_code, 0) << made.output;

  const std::string rsa_public = read_text(dir.path() / "rsa.pub");
  for (const char* name : {"rsa1.pem", "rsa8.pem"}) {
    SCOPED_TRACE(name);
    const KeyPair pair = key_pair_from_private_pem(read_text(dir.path() / name));
    EXPECT_EQ(pair.type, KeyType::rsa2048);
    EXPECT_EQ(pair.private_pem.rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
    EXPECT_EQ(without_whitespace(pair.public_pem), without_whitespace(rsa_public));
    EXPECT_EQ(fingerprint(pair.public_pem), fingerprint(rsa_public));
  }
  const KeyPair ec = key_pair_from_private_pem(read_text(dir.path() / "ec.pem"));
  EXPECT_EQ(ec.type, KeyType::ec_p256);
  EXPECT_EQ(without_whitespace(ec.public_pem),
            without_whitespace(read_text(dir.path() / "ec.pub")));
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
  TempDir dir;
  const fs::path p384 = dir.path() / "p384.pem";
  const fs::path rsa1024 = dir.path() / "rsa1024.pem";
  ASSERT_EQ(run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out " +
                quoted(p384) + " 2>/dev/null")
                .exit_code,
            0);
  ASSERT_EQ(run("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " +
                quoted(rsa1024) + " 2>/dev/null")
                .exit_code,
            0);
  EXPECT_THROW(key_pair_from_private_pem(read_text(p384)), KeyError);
  EXPECT_THROW(key_pair_from_private_pem(read_text(rsa1024)), KeyError);
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
