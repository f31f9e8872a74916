#pragma once
// Key pair generation and encoding with Crypto++ (SPEC section 5): private keys as PKCS#8 PEM
// ("BEGIN PRIVATE KEY"), public keys as SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY").
#include <cryptopp/cryptlib.h>
#include <cryptopp/rsa.h>
#include <cryptopp/secblock.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "secret.hpp"

namespace pa::keystore {

enum class KeyType { rsa2048, rsa3072, rsa4096, ec_p256, ed25519 };

// The names of the key types (PROVISION_KEY_TYPE, a request's key_type), one table for every
// reader (the configuration table and its documentation read it too).
inline constexpr std::array<std::pair<KeyType, std::string_view>, 5> kKeyTypeNames{{
    {KeyType::rsa2048, "rsa-2048"},
    {KeyType::rsa3072, "rsa-3072"},
    {KeyType::rsa4096, "rsa-4096"},
    {KeyType::ec_p256, "ec-p256"},
    {KeyType::ed25519, "ed25519"},
}};

std::string_view to_string(KeyType type) noexcept;
std::optional<KeyType> parse_key_type(std::string_view name) noexcept;

struct KeyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The private key's text is wiped when the pair goes (and when it is assigned over), so no
// caller writes a wipe guard for it.
struct KeyPair {
  KeyType type{};
  std::string private_pem;  // PKCS#8; treat as secret
  std::string public_pem;   // SubjectPublicKeyInfo

  KeyPair() = default;
  KeyPair(KeyType key_type, std::string private_key, std::string public_key)
      : type(key_type), private_pem(std::move(private_key)), public_pem(std::move(public_key)) {}
  KeyPair(const KeyPair&) = default;
  KeyPair(KeyPair&&) noexcept = default;
  KeyPair& operator=(const KeyPair& other) {
    if (this != &other) {
      Secret::wipe(private_pem);
      type = other.type;
      private_pem = other.private_pem;
      public_pem = other.public_pem;
    }
    return *this;
  }
  KeyPair& operator=(KeyPair&& other) noexcept {
    if (this != &other) {
      Secret::wipe(private_pem);
      type = other.type;
      private_pem = std::move(other.private_pem);
      public_pem = std::move(other.public_pem);
    }
    return *this;
  }
  ~KeyPair() { Secret::wipe(private_pem); }
};

// Generates a fresh pair. Throws KeyError on failure. The private PEM is written into one buffer
// sized for it up front, so no copy of it is left behind in freed memory: wiping the string
// wipes every copy.
KeyPair generate_key_pair(KeyType type);
// The same with the caller's random number generator (the key pool's, which can be made to throw
// to stop a generation early). What `rng` throws that is not a CryptoPP::Exception goes through.
KeyPair generate_key_pair(KeyType type, CryptoPP::RandomNumberGenerator& rng);

// Reads a PKCS#8 private key PEM of any supported type and derives the pair from it.
// Throws KeyError when the text is not such a key.
KeyPair key_pair_from_private_pem(std::string_view private_pem);

// "SHA256:" + unpadded base64 of SHA-256 over the public key's DER (SPEC section 3.2).
// Throws KeyError when the text is not a public key PEM.
std::string fingerprint(std::string_view public_pem);

// Reads a SubjectPublicKeyInfo PEM and names its type. Throws KeyError.
KeyType public_key_type(std::string_view public_pem);

// One PEM block's label and DER; the DER may be a private key, so it lives in a wiped SecByteBlock.
struct PemBlock {
  std::string label;
  CryptoPP::SecByteBlock der;
};

// The DER between "-----BEGIN <label>-----" and "-----END <label>-----" for the first of `labels`
// present in `pem` (Debian's Crypto++ ships without the PEM pack). Whitespace in the base64 body
// is skipped. Throws KeyError when none of the labels is there, the block has no END line, its
// body holds a character that is not base64, or it is empty.
PemBlock pem_decode(std::string_view pem, std::initializer_list<std::string_view> labels);

// RSA keys from PEM, for the agent key, envelopes and signatures: a private key as PKCS#8
// "PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY", a public key as SubjectPublicKeyInfo "PUBLIC KEY" or
// PKCS#1 "RSA PUBLIC KEY" (validated). Throw KeyError for anything else, e.g. an EC key.
CryptoPP::RSA::PrivateKey rsa_private_key_from_pem(std::string_view pem);
CryptoPP::RSA::PublicKey rsa_public_key_from_pem(std::string_view pem);

}  // namespace pa::keystore
