// pa_fuzz_seeds OUTPUT_DIR: writes OUTPUT_DIR/{request,envelope,pem}/ seeds that need keys:
// SPEC 3.1 requests sealed to the fuzz test key (EAX and GCM, every AES key size, signed and not)
// and freshly generated key pairs of every type, PKCS#8, PKCS#1 and public. scripts/fuzz.sh runs
// it into the build folder and passes the folders to the targets after the committed corpus.
#include <cryptopp/base64.h>
#include <cryptopp/filters.h>
#include <cryptopp/rsa.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "envelope.hpp"
#include "fuzz_support.hpp"
#include "keystore/key_pair.hpp"

namespace {

using namespace pa;
namespace fs = std::filesystem;

// The plaintexts: the original server's request (seeds/python-provision-agent-guide.md) and the
// SPEC 3.1 fields.
const std::vector<std::pair<std::string, std::string>> kRequests = {
    {"provision/pH01/request",
     R"({"device_id": "pH01", "action": "generate_and_publish_key", "user_id": "5"})"},
    {"provision/pH01/request",
     R"({"device_id":"pH01","action":"generate","user_id":5,"request_id":"r-1","ts":1763892000,"force":true,"key_type":"ec-p256"})"},
    {"provision/ec01/update",
     R"({"device_id":"ec01","action":"rotate","request_id":"r-2","nonce":"n-2","timestamp":"2026-11-23T10:00:00.123456+01:00"})"},
    {"provision/ec01/delete", R"({"request_id":"r-3","ts":1763892001})"},
};

void write(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  fuzz::write_file(path, content);
}

// PKCS#1 "RSA PRIVATE KEY" from a PKCS#8 RSA key (PyCryptodome's default format).
std::string pkcs1_pem(const std::string& pkcs8_pem) {
  const auto block = keystore::pem_decode(pkcs8_pem, {"PRIVATE KEY"});
  CryptoPP::RSA::PrivateKey key;
  CryptoPP::ArraySource source(block.der.data(), block.der.size(), true);
  key.BERDecode(source);
  std::string der, body;
  CryptoPP::StringSink sink(der);
  key.DEREncodePrivateKey(sink);
  CryptoPP::StringSource(der, true,
                         new CryptoPP::Base64Encoder(new CryptoPP::StringSink(body), true, 64));
  return "-----BEGIN RSA PRIVATE KEY-----\n" + body + "-----END RSA PRIVATE KEY-----\n";
}

void write_seeds(const fs::path& out) {
  int count = 0;
  for (const auto& [topic, plaintext] : kRequests) {
    for (const char* mode : {"EAX", "GCM"}) {
      for (std::size_t key_size : {16, 24, 32}) {
        e2ee::SealOptions options;
        options.mode = mode;
        options.key_size = key_size;
        options.nonce_size = key_size == 24 ? 12 : 16;
        Envelope envelope = e2ee::seal_envelope(plaintext, fuzz::test_public_pem(), options);
        if (key_size == 32) e2ee::sign_envelope(envelope, fuzz::test_private_pem());
        const std::string json = e2ee::envelope_json(envelope);
        const std::string name = "sealed-" + std::to_string(++count);
        write(out / "envelope" / name, json);
        write(out / "request" / name, topic + "\n" + json);
      }
    }
  }
  // The test key itself (RSA-1024, which key loading refuses by size), then one pair per type.
  write(out / "pem" / "rsa-1024-pkcs8", fuzz::test_private_pem());
  write(out / "pem" / "rsa-1024-public", fuzz::test_public_pem());
  for (const auto type :
       {keystore::KeyType::rsa2048, keystore::KeyType::ec_p256, keystore::KeyType::ed25519}) {
    const keystore::KeyPair pair = keystore::generate_key_pair(type);
    const std::string name(keystore::to_string(type));
    write(out / "pem" / (name + "-pkcs8"), pair.private_pem);
    write(out / "pem" / (name + "-public"), pair.public_pem);
    write(out / "pem" / (name + "-both"), pair.private_pem + pair.public_pem);
    if (type == keystore::KeyType::rsa2048)
      write(out / "pem" / (name + "-pkcs1"), pkcs1_pem(pair.private_pem));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    write_seeds(argv[1]);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "pa_fuzz_seeds: %s\n", error.what());
    return 1;
  }
  return 0;
}
