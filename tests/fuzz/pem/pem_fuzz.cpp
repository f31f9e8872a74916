// Key loading (SPEC section 5): keystore::pem_decode, key_pair_from_private_pem, fingerprint and
// public_key_type, on text that may hold private or public key PEM blocks.
//
// The only exception is KeyError. A loaded private key re-encodes to a pair that loads again to
// the same pair, whose public half has a fingerprint and the same type; fingerprint and
// public_key_type accept and refuse the same texts.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "keystore/key_pair.hpp"

namespace {

using namespace pa;
using keystore::KeyError;

void check_pem_decode(std::string_view text) {
  try {
    const auto block = keystore::pem_decode(text, {"PRIVATE KEY", "RSA PRIVATE KEY", "PUBLIC KEY"});
    PA_FUZZ_CHECK(!block.der.empty(), block.label);
    PA_FUZZ_CHECK(block.label == "PRIVATE KEY" || block.label == "RSA PRIVATE KEY" ||
                      block.label == "PUBLIC KEY",
                  block.label);
  } catch (const KeyError&) {
  }
}

void check_private_key(std::string_view text) {
  keystore::KeyPair pair;
  try {
    pair = keystore::key_pair_from_private_pem(text);
  } catch (const KeyError&) {
    return;
  }
  const std::string type(keystore::to_string(pair.type));
  try {
    const keystore::KeyPair again = keystore::key_pair_from_private_pem(pair.private_pem);
    PA_FUZZ_CHECK(again.type == pair.type && again.public_pem == pair.public_pem &&
                      again.private_pem == pair.private_pem,
                  type + " does not re-encode to itself");
    const std::string print = keystore::fingerprint(pair.public_pem);
    PA_FUZZ_CHECK(print.rfind("SHA256:", 0) == 0 && print.size() == 7 + 43, print);
    PA_FUZZ_CHECK(keystore::public_key_type(pair.public_pem) == pair.type, type);
  } catch (const KeyError& error) {
    PA_FUZZ_CHECK(false, type + " pair it made is refused: " + error.what());
  }
}

void check_public_key(std::string_view text) {
  bool printed = false, typed = false;
  try {
    keystore::fingerprint(text);
    printed = true;
  } catch (const KeyError&) {
  }
  try {
    keystore::public_key_type(text);
    typed = true;
  } catch (const KeyError&) {
  }
  PA_FUZZ_CHECK(printed == typed,
                printed ? "fingerprint without a type" : "a type without a fingerprint");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  check_pem_decode(text);
  check_private_key(text);
  check_public_key(text);
  return 0;
}
