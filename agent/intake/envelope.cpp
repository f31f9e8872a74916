#include "intake/envelope.hpp"

#include <cryptopp/aes.h>
#include <cryptopp/base64.h>
#include <cryptopp/eax.h>
#include <cryptopp/filters.h>
#include <cryptopp/gcm.h>
#include <cryptopp/misc.h>
#include <cryptopp/oaep.h>
#include <cryptopp/osrng.h>
#include <cryptopp/pssr.h>
#include <cryptopp/sha.h>

#include <stdexcept>

#include "base/json_writer.hpp"
#include "keystore/key_pair.hpp"

namespace pa::e2ee {
namespace {

using CryptoPP::byte;
using CryptoPP::SecByteBlock;
using keystore::KeyError;
using OaepDecryptor = CryptoPP::RSAES<CryptoPP::OAEP<CryptoPP::SHA1>>::Decryptor;
using OaepEncryptor = CryptoPP::RSAES<CryptoPP::OAEP<CryptoPP::SHA1>>::Encryptor;
using Signer = CryptoPP::RSASS<CryptoPP::PKCS1v15, CryptoPP::SHA256>::Signer;
using Verifier = CryptoPP::RSASS<CryptoPP::PKCS1v15, CryptoPP::SHA256>::Verifier;

// PyCryptodome's tags are 16 bytes unless the sender truncates them; below 12 bytes a forged tag
// gets too likely, so shorter ones are refused.
constexpr std::size_t kMinTag = 12;
constexpr std::size_t kMaxTag = 16;
constexpr std::size_t kMaxNonce = 64;

bool is_key_size(std::size_t size) {
  return size == 16 || size == 24 || size == 32;
}

void set_why(std::string* why, const char* reason) {
  if (why) *why = reason;
}

// An RSA private key from PKCS#8 or PKCS#1 PEM; nullopt for anything else (an EC device key):
// a key that is not RSA does not open an envelope.
std::optional<CryptoPP::RSA::PrivateKey> rsa_private_key(std::string_view pem) {
  try {
    return keystore::rsa_private_key_from_pem(pem);
  } catch (const KeyError&) {
    return std::nullopt;
  }
}

// AES-EAX or AES-GCM decryption with the tag at the end; false when the tag does not verify.
template <class Mode>
bool aes_open(const SecByteBlock& key, const SecByteBlock& nonce, const SecByteBlock& tag,
              const SecByteBlock& ciphertext, SecByteBlock& plaintext) {
  plaintext.New(ciphertext.size());
  try {
    typename Mode::Decryption cipher;
    cipher.SetKeyWithIV(key, key.size(), nonce, nonce.size());
    CryptoPP::AuthenticatedDecryptionFilter filter(
        cipher, new CryptoPP::ArraySink(plaintext, plaintext.size()),
        CryptoPP::AuthenticatedDecryptionFilter::MAC_AT_END |
            CryptoPP::AuthenticatedDecryptionFilter::THROW_EXCEPTION,
        static_cast<int>(tag.size()));
    filter.Put(ciphertext, ciphertext.size());
    filter.Put(tag, tag.size());
    filter.MessageEnd();
    return true;
  } catch (const CryptoPP::Exception&) {
    plaintext.CleanNew(0);  // wipes what was decrypted before the tag failed
    return false;
  }
}

template <class Mode>
void aes_seal(const SecByteBlock& key, const SecByteBlock& nonce, std::string_view plaintext,
              std::string& ciphertext, std::string& tag) {
  typename Mode::Encryption cipher;
  cipher.SetKeyWithIV(key, key.size(), nonce, nonce.size());
  std::string sealed;
  CryptoPP::AuthenticatedEncryptionFilter filter(cipher, new CryptoPP::StringSink(sealed), false,
                                                 static_cast<int>(kMaxTag));
  filter.Put(reinterpret_cast<const byte*>(plaintext.data()), plaintext.size());
  filter.MessageEnd();
  ciphertext = sealed.substr(0, sealed.size() - kMaxTag);
  tag = sealed.substr(sealed.size() - kMaxTag);
}

}  // namespace

std::optional<SecByteBlock> decode_base64(std::string_view text) {
  // Crypto++'s decoder skips characters outside the alphabet; a tampered field must fail instead.
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  std::size_t padding = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '=') {
      ++padding;
      continue;
    }
    if (padding > 0) return std::nullopt;  // '=' only at the end
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '/'))
      return std::nullopt;
  }
  if (padding > 2) return std::nullopt;
  SecByteBlock out(text.size() / 4 * 3 - padding);
  CryptoPP::Base64Decoder decoder(new CryptoPP::ArraySink(out, out.size()));
  decoder.Put(reinterpret_cast<const byte*>(text.data()), text.size());
  decoder.MessageEnd();
  return out;
}

std::string encode_base64(const byte* data, std::size_t size) {
  std::string out;
  CryptoPP::ArraySource(data, size, true,
                        new CryptoPP::Base64Encoder(new CryptoPP::StringSink(out), false));
  return out;
}

std::optional<SecByteBlock> open_envelope(const Envelope& envelope, std::string_view private_pem,
                                          std::string* why) {
  const bool gcm = envelope.mode == "GCM";
  if (!gcm && envelope.mode != "EAX") {
    set_why(why, "unknown mode (EAX or GCM)");
    return std::nullopt;
  }
  auto wrapped_key = decode_base64(envelope.session_key);
  auto nonce = decode_base64(envelope.nonce);
  auto tag = decode_base64(envelope.tag);
  auto ciphertext = decode_base64(envelope.ciphertext);
  if (!wrapped_key || !nonce || !tag || !ciphertext) {
    set_why(why, "a field is not standard base64");
    return std::nullopt;
  }
  if (nonce->size() > kMaxNonce || tag->size() < kMinTag || tag->size() > kMaxTag) {
    set_why(why, "nonce or tag of an unsupported length");
    return std::nullopt;
  }
  auto key = rsa_private_key(private_pem);
  if (!key) {
    set_why(why, "not an RSA private key");
    return std::nullopt;
  }

  CryptoPP::AutoSeededRandomPool rng;  // RSA blinding
  OaepDecryptor rsa(*key);
  if (wrapped_key->size() != rsa.FixedCiphertextLength()) {
    set_why(why, "session key is not sized for this RSA key");
    return std::nullopt;
  }
  SecByteBlock session_key(rsa.FixedMaxPlaintextLength());
  CryptoPP::DecodingResult unwrapped;
  try {
    unwrapped = rsa.Decrypt(rng, *wrapped_key, wrapped_key->size(), session_key);
  } catch (const CryptoPP::Exception&) {
    // A value not below this key's modulus (made for another key of the same size).
    unwrapped = CryptoPP::DecodingResult();
  }
  if (!unwrapped.isValidCoding || !is_key_size(unwrapped.messageLength)) {
    set_why(why, "session key does not decrypt with this key");
    return std::nullopt;
  }
  session_key.resize(unwrapped.messageLength);  // SecBlock wipes what it drops

  SecByteBlock plaintext;
  const bool opened = gcm ? aes_open<CryptoPP::GCM<CryptoPP::AES>>(session_key, *nonce, *tag,
                                                                   *ciphertext, plaintext)
                          : aes_open<CryptoPP::EAX<CryptoPP::AES>>(session_key, *nonce, *tag,
                                                                   *ciphertext, plaintext);
  if (!opened) {
    set_why(why, "tag does not verify");
    return std::nullopt;
  }
  return plaintext;
}

Envelope seal_envelope(std::string_view plaintext, std::string_view public_pem,
                       const SealOptions& options) {
  if (options.mode != "EAX" && options.mode != "GCM")
    throw std::invalid_argument("mode must be EAX or GCM");
  if (!is_key_size(options.key_size)) throw std::invalid_argument("AES key of 16, 24 or 32 bytes");
  if (options.nonce_size == 0 || options.nonce_size > kMaxNonce)
    throw std::invalid_argument("nonce of 1 to 64 bytes");
  const CryptoPP::RSA::PublicKey public_key = keystore::rsa_public_key_from_pem(public_pem);

  CryptoPP::AutoSeededRandomPool rng;
  SecByteBlock session_key(options.key_size);
  SecByteBlock nonce(options.nonce_size);
  rng.GenerateBlock(session_key, session_key.size());
  rng.GenerateBlock(nonce, nonce.size());

  OaepEncryptor rsa(public_key);
  SecByteBlock wrapped(rsa.CiphertextLength(session_key.size()));
  rsa.Encrypt(rng, session_key, session_key.size(), wrapped);

  std::string ciphertext, tag;
  if (options.mode == "GCM")
    aes_seal<CryptoPP::GCM<CryptoPP::AES>>(session_key, nonce, plaintext, ciphertext, tag);
  else
    aes_seal<CryptoPP::EAX<CryptoPP::AES>>(session_key, nonce, plaintext, ciphertext, tag);

  Envelope envelope;
  envelope.session_key = encode_base64(wrapped, wrapped.size());
  envelope.nonce = encode_base64(nonce, nonce.size());
  envelope.tag = encode_base64(reinterpret_cast<const byte*>(tag.data()), tag.size());
  envelope.ciphertext =
      encode_base64(reinterpret_cast<const byte*>(ciphertext.data()), ciphertext.size());
  envelope.mode = options.mode;
  return envelope;
}

void sign_envelope(Envelope& envelope, std::string_view private_pem) {
  auto ciphertext = decode_base64(envelope.ciphertext);
  if (!ciphertext) throw std::invalid_argument("ciphertext is not standard base64");
  Signer signer(keystore::rsa_private_key_from_pem(private_pem));
  CryptoPP::AutoSeededRandomPool rng;
  SecByteBlock signature(signer.MaxSignatureLength());
  const std::size_t length = signer.SignMessage(rng, *ciphertext, ciphertext->size(), signature);
  envelope.signature = encode_base64(signature, length);
}

std::string envelope_json(const Envelope& envelope) {
  JsonObjectWriter json;
  json.field("session_key", envelope.session_key)
      .field("nonce", envelope.nonce)
      .field("tag", envelope.tag)
      .field("ciphertext", envelope.ciphertext)
      .field("mode", envelope.mode)
      .optional_field("signature", envelope.signature);
  return json.str();
}

SignatureVerifier::SignatureVerifier(std::string_view public_pem)
    : key_(keystore::rsa_public_key_from_pem(public_pem)) {}

bool SignatureVerifier::verify(const Envelope& envelope) const {
  if (!envelope.signature) return false;
  auto signature = decode_base64(*envelope.signature);
  auto ciphertext = decode_base64(envelope.ciphertext);
  if (!signature || !ciphertext) return false;
  const Verifier verifier(key_);  // one per call: Crypto++ objects are not shared across threads
  if (signature->size() != verifier.SignatureLength()) return false;
  return verifier.VerifyMessage(*ciphertext, ciphertext->size(), *signature, signature->size());
}

}  // namespace pa::e2ee
