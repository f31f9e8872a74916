// The envelope of SPEC section 4 against the real PyCryptodome (Debian's python3-pycryptodome,
// module Cryptodome): what it encrypts opens here, byte for byte; what we seal opens there; and
// server signatures (pkcs1_15, SHA-256 over the decoded ciphertext) verify both ways.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "intake/envelope.hpp"
#include "keystore/key_pair.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

using test::parse_json;
using test::run_command;
using test::shell_quote;
using test::TempDir;

// Debian's interpreter: the one python3-pycryptodome installs Cryptodome for.
constexpr const char* kPython = "/usr/bin/python3";

// Helpers shared by every Python snippet: hybrid encryption exactly as PyCryptodome documents it.
constexpr const char* kPythonPrelude = R"PY(
import base64, json, sys
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Cipher import AES, PKCS1_OAEP
from Cryptodome.Signature import pkcs1_15
from Cryptodome.Hash import SHA256

def b64(data):
    return base64.b64encode(data).decode()

def envelope(public_pem, data, mode="EAX", key_size=16):
    key = RSA.import_key(public_pem)
    session_key = get_random_bytes(key_size)
    enc_session_key = PKCS1_OAEP.new(key).encrypt(session_key)
    cipher = AES.new(session_key, AES.MODE_EAX if mode == "EAX" else AES.MODE_GCM)
    ciphertext, tag = cipher.encrypt_and_digest(data)
    out = {"session_key": b64(enc_session_key), "nonce": b64(cipher.nonce), "tag": b64(tag),
           "ciphertext": b64(ciphertext)}
    if mode != "EAX":
        out["mode"] = mode
    return out

def open_envelope(private_pem, env):
    key = RSA.import_key(private_pem)
    session_key = PKCS1_OAEP.new(key).decrypt(base64.b64decode(env["session_key"]))
    mode = AES.MODE_GCM if env.get("mode") == "GCM" else AES.MODE_EAX
    cipher = AES.new(session_key, mode, nonce=base64.b64decode(env["nonce"]))
    return cipher.decrypt_and_verify(base64.b64decode(env["ciphertext"]),
                                     base64.b64decode(env["tag"]))
)PY";

class EnvelopeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pair_ = new keystore::KeyPair(keystore::generate_key_pair(keystore::KeyType::rsa2048));
    other_ = new keystore::KeyPair(keystore::generate_key_pair(keystore::KeyType::rsa2048));
  }
  static void TearDownTestSuite() {
    delete pair_;
    delete other_;
  }

  // Runs a Python snippet (after the prelude) and returns its stdout; fails the test otherwise.
  std::string python(const std::string& body) {
    const std::string script = dir_.file("snippet.py");
    test::write_file(script, std::string(kPythonPrelude) + body);
    test::write_file(dir_.file("private.pem"), pair_->private_pem, 0600);
    test::write_file(dir_.file("public.pem"), pair_->public_pem);
    test::write_file(dir_.file("other_private.pem"), other_->private_pem, 0600);
    test::write_file(dir_.file("other_public.pem"), other_->public_pem);
    auto result = run_command(std::string(kPython) + " " + shell_quote(script) + " " +
                              shell_quote(dir_.path()));
    EXPECT_EQ(result.exit_code, 0) << result.output;
    return result.output;
  }

  static Envelope envelope_from(const rapidjson::Value& json) {
    Envelope envelope;
    envelope.session_key = test::json_string(json, "session_key");
    envelope.nonce = test::json_string(json, "nonce");
    envelope.tag = test::json_string(json, "tag");
    envelope.ciphertext = test::json_string(json, "ciphertext");
    if (test::json_has(json, "mode")) envelope.mode = test::json_string(json, "mode");
    if (test::json_has(json, "signature"))
      envelope.signature = test::json_string(json, "signature");
    return envelope;
  }

  // A PyCryptodome envelope of `plaintext` to our public key.
  Envelope python_envelope(const std::string& plaintext, const std::string& mode = "EAX",
                           int key_size = 16) {
    test::write_file(dir_.file("plain.txt"), plaintext);
    auto out = python(
        "d = sys.argv[1]\n"
        "print(json.dumps(envelope(open(d + '/public.pem').read(), "
        "open(d + '/plain.txt', 'rb').read(), '" +
        mode + "', " + std::to_string(key_size) + ")))\n");
    auto json = parse_json(out);
    EXPECT_FALSE(json.HasParseError()) << out;
    return envelope_from(json);
  }

  static std::string text(const std::optional<CryptoPP::SecByteBlock>& block) {
    return block ? std::string(reinterpret_cast<const char*>(block->data()), block->size())
                 : std::string("<nullopt>");
  }

  // Flips one bit of a base64 field's decoded bytes.
  static std::string tampered(const std::string& field, std::size_t at = 0) {
    auto bytes = e2ee::decode_base64(field);
    EXPECT_TRUE(bytes);
    (*bytes)[at % bytes->size()] ^= 0x01;
    return e2ee::encode_base64(bytes->data(), bytes->size());
  }

  TempDir dir_;
  static keystore::KeyPair* pair_;
  static keystore::KeyPair* other_;
};

keystore::KeyPair* EnvelopeTest::pair_ = nullptr;
keystore::KeyPair* EnvelopeTest::other_ = nullptr;

TEST_F(EnvelopeTest, OpensWhatPyCryptodomeMakesInEveryModeAndKeySize) {
  // One interpreter run for the twelve envelopes keeps the test fast.
  auto out = python(R"PY(
d = sys.argv[1]
pub = open(d + '/public.pem').read()
cases = []
for mode in ("EAX", "GCM"):
    for size in (16, 24, 32):
        for data in (b'{"action":"update","request_id":"r-%s-%d"}' % (mode.encode(), size),
                     "{\"user_id\":\"\u00e9l\u00e8ve\",\"pad\":\"%s\"}".encode() % (b"x" * 3000)):
            cases.append({"mode": mode, "size": size, "plaintext": b64(data),
                          "envelope": envelope(pub, data, mode, size)})
print(json.dumps(cases))
)PY");
  auto cases = parse_json(out);
  ASSERT_TRUE(cases.IsArray()) << out;
  ASSERT_EQ(cases.Size(), 12u);
  for (const auto& c : cases.GetArray()) {
    const std::string mode = test::json_string(c, "mode");
    SCOPED_TRACE(mode + " with a " + std::to_string(c["size"].GetInt()) + "-byte key");
    const Envelope envelope = envelope_from(c["envelope"]);
    EXPECT_EQ(envelope.mode, mode);  // EAX came without "mode": the default
    auto expected = e2ee::decode_base64(test::json_string(c, "plaintext"));
    ASSERT_TRUE(expected);
    std::string why;
    auto plaintext = e2ee::open_envelope(envelope, pair_->private_pem, &why);
    ASSERT_TRUE(plaintext) << why;
    EXPECT_EQ(*plaintext, *expected);
  }
}

TEST_F(EnvelopeTest, TamperedTagCiphertextOrSessionKeyDoesNotOpen) {
  const Envelope good = python_envelope(R"({"action":"delete","request_id":"t1"})");
  ASSERT_TRUE(e2ee::open_envelope(good, pair_->private_pem));
  for (std::size_t at : {0u, 7u, 15u}) {
    Envelope bad = good;
    bad.tag = tampered(good.tag, at);
    EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem)) << "tag byte " << at;
    bad = good;
    bad.ciphertext = tampered(good.ciphertext, at);
    EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem)) << "ciphertext byte " << at;
    bad = good;
    bad.session_key = tampered(good.session_key, at);
    EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem)) << "session key byte " << at;
    bad = good;
    bad.nonce = tampered(good.nonce, at);
    EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem)) << "nonce byte " << at;
  }
  Envelope bad = good;
  bad.mode = "GCM";  // right bytes, wrong mode
  EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem));
  bad.mode = "CBC";
  std::string why;
  EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem, &why));
  EXPECT_NE(why.find("mode"), std::string::npos) << why;
  bad = good;
  bad.tag = e2ee::encode_base64(e2ee::decode_base64(good.tag)->data(), 8);  // truncated tag
  EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem));
  bad = good;
  bad.ciphertext = "not base64!";
  EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem));
  bad = good;
  bad.ciphertext += "\n";  // Crypto++'s decoder would skip it; a strict one refuses
  EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem));
  bad = good;
  bad.session_key.clear();
  EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem));
  // A wrapped key not below the modulus: Crypto++ throws inside RSA; it must read as "no".
  const std::string ones(256, '\xff');
  bad = good;
  bad.session_key =
      e2ee::encode_base64(reinterpret_cast<const CryptoPP::byte*>(ones.data()), ones.size());
  EXPECT_FALSE(e2ee::open_envelope(bad, pair_->private_pem, &why));
  EXPECT_EQ(why, "session key does not decrypt with this key");
}

TEST_F(EnvelopeTest, WrongOrUnusableKeyDoesNotOpen) {
  const Envelope envelope = python_envelope(R"({"action":"update"})", "GCM", 32);
  std::string why;
  EXPECT_FALSE(e2ee::open_envelope(envelope, other_->private_pem, &why));
  EXPECT_EQ(why, "session key does not decrypt with this key");
  const auto ec = keystore::generate_key_pair(keystore::KeyType::ec_p256);
  EXPECT_FALSE(e2ee::open_envelope(envelope, ec.private_pem, &why));
  EXPECT_EQ(why, "not an RSA private key");
  EXPECT_FALSE(e2ee::open_envelope(envelope, "garbage", &why));
  const auto big = keystore::generate_key_pair(keystore::KeyType::rsa3072);
  EXPECT_FALSE(e2ee::open_envelope(envelope, big.private_pem, &why));
  EXPECT_EQ(why, "session key is not sized for this RSA key");
}

TEST_F(EnvelopeTest, OpensWithAPkcs1KeyAsPyCryptodomeExportsIt) {
  // The original agent's $PROJECT_ROOT/keys/private.pem: PyCryptodome's default export.
  auto out = python(R"PY(
key = RSA.generate(2048)
env = envelope(key.publickey().export_key().decode(), b'{"action":"generate"}', "EAX", 24)
print(json.dumps({"private": key.export_key().decode(), "envelope": env}))
)PY");
  auto json = parse_json(out);
  ASSERT_TRUE(json.IsObject()) << out;
  const std::string pem = test::json_string(json, "private");
  ASSERT_EQ(pem.rfind("-----BEGIN RSA PRIVATE KEY-----", 0), 0u);
  std::string why;
  EXPECT_EQ(text(e2ee::open_envelope(envelope_from(json["envelope"]), pem, &why)),
            R"({"action":"generate"})")
      << why;
}

TEST_F(EnvelopeTest, PyCryptodomeOpensWhatWeSeal) {
  const std::string plaintext = R"({"device_id":"pH01","action":"update","request_id":"s-1"})";
  std::string envelopes = "[";
  for (const std::string mode : {"EAX", "GCM"})
    for (std::size_t size : {16u, 24u, 32u}) {
      e2ee::SealOptions options;
      options.mode = mode;
      options.key_size = size;
      const Envelope envelope = e2ee::seal_envelope(plaintext, pair_->public_pem, options);
      // And we open our own.
      EXPECT_EQ(text(e2ee::open_envelope(envelope, pair_->private_pem)), plaintext);
      envelopes += (envelopes.size() > 1 ? "," : "") + e2ee::envelope_json(envelope);
    }
  envelopes += "]";
  test::write_file(dir_.file("sealed.json"), envelopes);
  auto out = python(R"PY(
d = sys.argv[1]
priv = open(d + '/private.pem').read()
for env in json.load(open(d + '/sealed.json')):
    print(env["mode"], len(base64.b64decode(env["nonce"])), len(base64.b64decode(env["tag"])),
          open_envelope(priv, env).decode())
)PY");
  std::string expected;
  for (const char* mode : {"EAX", "GCM"})
    for (int i = 0; i < 3; ++i) expected += std::string(mode) + " 16 16 " + plaintext + "\n";
  EXPECT_EQ(out, expected);
  EXPECT_THROW(e2ee::seal_envelope(plaintext, "not a key"), keystore::KeyError);
  e2ee::SealOptions bad;
  bad.key_size = 20;
  EXPECT_THROW(e2ee::seal_envelope(plaintext, pair_->public_pem, bad), std::invalid_argument);
}

TEST_F(EnvelopeTest, SignaturesVerifyBothWaysWithPkcs1_15) {
  // Ours, checked by PyCryptodome.
  Envelope ours = e2ee::seal_envelope(R"({"action":"delete"})", other_->public_pem);
  e2ee::sign_envelope(ours, pair_->private_pem);
  ASSERT_TRUE(ours.signature);
  test::write_file(dir_.file("ours.json"), e2ee::envelope_json(ours));
  auto out = python(R"PY(
d = sys.argv[1]
env = json.load(open(d + '/ours.json'))
pub = RSA.import_key(open(d + '/public.pem').read())
pkcs1_15.new(pub).verify(SHA256.new(base64.b64decode(env["ciphertext"])),
                         base64.b64decode(env["signature"]))
print("verified")
# And one of PyCryptodome's, over an envelope of its own.
env = envelope(open(d + '/other_public.pem').read(), b'{"action":"update"}')
priv = RSA.import_key(open(d + '/private.pem').read())
env["signature"] = b64(pkcs1_15.new(priv).sign(SHA256.new(base64.b64decode(env["ciphertext"]))))
print(json.dumps(env))
)PY");
  const auto newline = out.find('\n');
  ASSERT_NE(newline, std::string::npos) << out;
  EXPECT_EQ(out.substr(0, newline), "verified");
  auto json = parse_json(out.substr(newline + 1));
  ASSERT_TRUE(json.IsObject()) << out;
  const Envelope theirs = envelope_from(json);

  const e2ee::SignatureVerifier server(pair_->public_pem);
  EXPECT_TRUE(server.verify(ours));
  EXPECT_TRUE(server.verify(theirs));
  EXPECT_EQ(text(e2ee::open_envelope(theirs, other_->private_pem)), R"({"action":"update"})");

  Envelope bad = theirs;
  bad.signature.reset();
  EXPECT_FALSE(server.verify(bad));
  bad.signature = tampered(*theirs.signature, 100);
  EXPECT_FALSE(server.verify(bad));
  bad = theirs;
  bad.ciphertext = tampered(theirs.ciphertext);  // the signature covers the ciphertext
  EXPECT_FALSE(server.verify(bad));
  bad = theirs;
  bad.signature = "AAAA";
  EXPECT_FALSE(server.verify(bad));
  // Signed by someone else.
  Envelope forged = theirs;
  e2ee::sign_envelope(forged, other_->private_pem);
  EXPECT_FALSE(server.verify(forged));
  EXPECT_THROW(e2ee::SignatureVerifier("not a key"), keystore::KeyError);
}

TEST(Base64, StrictStandardAlphabetWithPadding) {
  EXPECT_EQ(e2ee::decode_base64("aGk=")->size(), 2u);
  EXPECT_EQ(e2ee::decode_base64("aGlq")->size(), 3u);
  EXPECT_EQ(e2ee::decode_base64("aA==")->size(), 1u);
  for (const char* bad : {"", "aGk", "aG=k", "a===", "aGk-", "aGk_", "aG k", "aGk=\n", "===="})
    EXPECT_FALSE(e2ee::decode_base64(bad)) << '"' << bad << '"';
  const std::string bytes("\x00\xff\x10 binary", 10);
  const std::string encoded =
      e2ee::encode_base64(reinterpret_cast<const CryptoPP::byte*>(bytes.data()), bytes.size());
  EXPECT_EQ(encoded, "AP8QIGJpbmFyeQ==");
  auto decoded = e2ee::decode_base64(encoded);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(decoded->data()), decoded->size()), bytes);
}

}  // namespace
}  // namespace pa
