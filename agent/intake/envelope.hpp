#pragma once
// The encrypted envelope of SPEC section 4, byte for byte what PyCryptodome's documented hybrid
// scheme makes: a random AES key (16, 24 or 32 bytes) under RSA-OAEP (SHA-1, MGF1-SHA-1), the
// request under AES-EAX (default) or AES-GCM with that key, and optionally the server's RSA
// PKCS#1 v1.5 SHA-256 signature over the decoded ciphertext. Session keys and plaintext live in
// SecByteBlocks, wiped when freed. Nothing here keeps a key between calls.
#include <cryptopp/rsa.h>
#include <cryptopp/secblock.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "intake/request.hpp"

namespace pa::e2ee {

// Opens `envelope` with an RSA private key PEM (PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY").
// Returns the plaintext, or nullopt when this key does not open it: not an RSA key, malformed
// base64, a session key that is not OAEP under this key or not 16/24/32 bytes, an unknown mode,
// or a tag that does not verify. `why` (optional) gets a short reason for the log; it never holds
// key material or plaintext.
std::optional<CryptoPP::SecByteBlock> open_envelope(const Envelope& envelope,
                                                    std::string_view private_pem,
                                                    std::string* why = nullptr);

struct SealOptions {
  std::string mode = "EAX";     // "EAX" or "GCM"
  std::size_t key_size = 32;    // AES key bytes: 16, 24 or 32
  std::size_t nonce_size = 16;  // PyCryptodome's default for both modes
};

// Encrypts `plaintext` to an RSA public key PEM (SubjectPublicKeyInfo "PUBLIC KEY" or PKCS#1
// "RSA PUBLIC KEY") in the envelope of SPEC section 4. Throws keystore::KeyError for an unusable
// key and std::invalid_argument for bad options.
Envelope seal_envelope(std::string_view plaintext, std::string_view public_pem,
                       const SealOptions& options = {});

// Adds `signature`: RSA PKCS#1 v1.5 SHA-256 over the decoded ciphertext, made with an RSA private
// key PEM (PyCryptodome's pkcs1_15). Throws keystore::KeyError.
void sign_envelope(Envelope& envelope, std::string_view private_pem);

// The envelope as the JSON object servers publish (session_key, nonce, tag, ciphertext, mode,
// and signature when present).
std::string envelope_json(const Envelope& envelope);

// Checks envelope signatures against the server's public key (PROVISION_SERVER_PUBKEY).
// Holds only the public key; safe to call from several threads at once.
class SignatureVerifier {
 public:
  // Throws keystore::KeyError when `public_pem` is not an RSA public key.
  explicit SignatureVerifier(std::string_view public_pem);

  // True when `envelope.signature` is a valid signature of the decoded ciphertext.
  bool verify(const Envelope& envelope) const;

 private:
  CryptoPP::RSA::PublicKey key_;
};

// Standard base64 (RFC 4648 section 4, padded, no whitespace) -> bytes; nullopt when malformed.
std::optional<CryptoPP::SecByteBlock> decode_base64(std::string_view text);
std::string encode_base64(const CryptoPP::byte* data, std::size_t size);

}  // namespace pa::e2ee
