#include "key_pair.hpp"

#include <cryptopp/asn.h>
#include <cryptopp/base64.h>
#include <cryptopp/eccrypto.h>
#include <cryptopp/filters.h>
#include <cryptopp/oids.h>
#include <cryptopp/osrng.h>
#include <cryptopp/queue.h>
#include <cryptopp/rsa.h>
#include <cryptopp/secblock.h>
#include <cryptopp/sha.h>
#include <cryptopp/xed25519.h>

#include <array>
#include <initializer_list>
#include <utility>

namespace pa::keystore {
namespace {

using CryptoPP::SecByteBlock;
using EcPublicKey = CryptoPP::ECDSA<CryptoPP::ECP, CryptoPP::SHA256>::PublicKey;

// Crypto++ writes an ECPrivateKey (RFC 5915) holding only the version and the scalar; PyCryptodome
// 3.11 refuses that. This writes the public point too ([1]), as OpenSSL does. Crypto++ reads both.
class EcPrivateKey : public CryptoPP::ECDSA<CryptoPP::ECP, CryptoPP::SHA256>::PrivateKey {
 public:
  void DEREncodePrivateKey(CryptoPP::BufferedTransformation& bt) const override {
    const auto& group = GetGroupParameters();
    CryptoPP::DERSequenceEncoder key(bt);
    CryptoPP::DEREncodeUnsigned<CryptoPP::word32>(key, 1);  // ecPrivkeyVer1
    GetPrivateExponent().DEREncodeAsOctetString(key, group.GetSubgroupOrder().ByteCount());
    const CryptoPP::ECP::Point point = group.ExponentiateBase(GetPrivateExponent());
    SecByteBlock encoded(group.GetCurve().EncodedPointSize(false));
    group.GetCurve().EncodePoint(encoded, point, false);
    CryptoPP::DERGeneralEncoder public_key(key,
                                           CryptoPP::CONTEXT_SPECIFIC | CryptoPP::CONSTRUCTED | 1);
    CryptoPP::DEREncodeBitString(public_key, encoded, encoded.size());
    public_key.MessageEnd();
    key.MessageEnd();
  }
};

constexpr std::string_view kPrivateLabel = "PRIVATE KEY";         // PKCS#8
constexpr std::string_view kRsaPrivateLabel = "RSA PRIVATE KEY";  // PKCS#1, PyCryptodome's default
constexpr std::string_view kPublicLabel = "PUBLIC KEY";           // SubjectPublicKeyInfo

// A decoded private key; the member named by `type` is the one in use. The pair is re-encoded and
// the public half derived from it.
struct PrivateKey {
  KeyType type;
  CryptoPP::RSA::PrivateKey rsa;
  EcPrivateKey ec;
  CryptoPP::ed25519PrivateKey ed;
};

template <class Key>
SecByteBlock der_encode(const Key& key) {
  CryptoPP::ByteQueue queue;  // its buffers are SecByteBlocks, wiped when freed
  key.DEREncode(queue);
  SecByteBlock der(static_cast<std::size_t>(queue.MaxRetrievable()));
  queue.Get(der, der.size());
  return der;
}

// Debian's Crypto++ ships without the PEM pack, hence this small armor code. The text is written
// into a buffer reserved for all of it: a string that grew would leave copies of a private key in
// the memory it freed, where no wipe reaches.
std::string pem_encode(std::string_view label, const SecByteBlock& der) {
  const std::size_t base64 = (der.size() + 2) / 3 * 4;
  std::string pem;
  pem.reserve(2 * label.size() + 32 + base64 + base64 / 64 + 2);
  pem += "-----BEGIN ";
  pem += label;
  pem += "-----\n";
  CryptoPP::ArraySource(der.data(), der.size(), true,
                        new CryptoPP::Base64Encoder(new CryptoPP::StringSink(pem), true, 64));
  pem += "-----END ";
  pem += label;
  pem += "-----\n";
  return pem;
}

bool is_base64_or_space(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/' || c == '=' || c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

// Reads the algorithm OID (and the curve OID when the parameters name one) from an
// AlgorithmIdentifier, leaving the rest of `parent` unread.
std::pair<CryptoPP::OID, CryptoPP::OID> decode_algorithm(CryptoPP::BERSequenceDecoder& parent) {
  CryptoPP::OID algorithm;
  CryptoPP::OID curve;
  CryptoPP::BERSequenceDecoder identifier(parent);
  algorithm.BERDecode(identifier);
  if (!identifier.EndReached() && identifier.PeekByte() == CryptoPP::OBJECT_IDENTIFIER) {
    curve.BERDecode(identifier);
  }
  identifier.SkipAll();
  return {algorithm, curve};
}

// Names the key type from an AlgorithmIdentifier. RSA sizes are settled once the key is decoded.
KeyType type_from_algorithm(const CryptoPP::OID& algorithm, const CryptoPP::OID& curve) {
  if (algorithm == CryptoPP::ASN1::rsaEncryption()) return KeyType::rsa2048;
  if (algorithm == CryptoPP::ASN1::Ed25519()) return KeyType::ed25519;
  if (algorithm == CryptoPP::ASN1::id_ecPublicKey()) {
    if (curve == CryptoPP::ASN1::secp256r1()) return KeyType::ec_p256;
    throw KeyError("unsupported elliptic curve (only P-256 by its named-curve OID)");
  }
  throw KeyError("unsupported key algorithm");
}

KeyType rsa_type(const CryptoPP::Integer& modulus) {
  switch (modulus.BitCount()) {
    case 2048:
      return KeyType::rsa2048;
    case 3072:
      return KeyType::rsa3072;
    case 4096:
      return KeyType::rsa4096;
    default:
      throw KeyError("unsupported RSA key size " + std::to_string(modulus.BitCount()) +
                     " (2048, 3072 or 4096)");
  }
}

KeyType pkcs8_type(const SecByteBlock& der) {
  CryptoPP::ArraySource source(der.data(), der.size(), true);
  CryptoPP::BERSequenceDecoder info(source);
  CryptoPP::word32 version = 0;
  CryptoPP::BERDecodeUnsigned<CryptoPP::word32>(info, version, CryptoPP::INTEGER, 0, 1);
  const auto [algorithm, curve] = decode_algorithm(info);
  return type_from_algorithm(algorithm, curve);
}

KeyType spki_type(const SecByteBlock& der) {
  CryptoPP::ArraySource source(der.data(), der.size(), true);
  CryptoPP::BERSequenceDecoder info(source);
  const auto [algorithm, curve] = decode_algorithm(info);
  return type_from_algorithm(algorithm, curve);
}

void require_valid(const CryptoPP::CryptoMaterial& key, CryptoPP::RandomNumberGenerator& rng) {
  // Level 1: consistency of the key's parts without the slow primality tests.
  if (!key.Validate(rng, 1)) throw KeyError("the key fails validation");
}

KeyPair encode_pair(PrivateKey& key) {
  KeyPair pair{key.type, {}, {}};
  switch (key.type) {
    case KeyType::rsa2048:
    case KeyType::rsa3072:
    case KeyType::rsa4096: {
      CryptoPP::RSA::PublicKey pub;
      pub.AssignFrom(key.rsa);
      pair.private_pem = pem_encode(kPrivateLabel, der_encode(key.rsa));
      pair.public_pem = pem_encode(kPublicLabel, der_encode(pub));
      break;
    }
    case KeyType::ec_p256: {
      // The named-curve OID, not explicit parameters: OpenSSL 3 and PyCryptodome require it.
      key.ec.AccessGroupParameters().SetEncodeAsOID(true);
      EcPublicKey pub;
      key.ec.MakePublicKey(pub);
      pub.AccessGroupParameters().SetEncodeAsOID(true);
      pair.private_pem = pem_encode(kPrivateLabel, der_encode(key.ec));
      pair.public_pem = pem_encode(kPublicLabel, der_encode(pub));
      break;
    }
    case KeyType::ed25519: {
      CryptoPP::ed25519PublicKey pub;
      key.ed.MakePublicKey(pub);
      pair.private_pem = pem_encode(kPrivateLabel, der_encode(key.ed));
      pair.public_pem = pem_encode(kPublicLabel, der_encode(pub));
      break;
    }
  }
  return pair;
}

// Decodes a SubjectPublicKeyInfo fully (so a damaged key is refused) and names its type.
KeyType decode_public(const SecByteBlock& der) {
  CryptoPP::AutoSeededRandomPool rng;
  const KeyType type = spki_type(der);
  CryptoPP::ArraySource source(der.data(), der.size(), true);
  switch (type) {
    case KeyType::rsa2048:
    case KeyType::rsa3072:
    case KeyType::rsa4096: {
      CryptoPP::RSA::PublicKey key;
      key.BERDecode(source);
      require_valid(key, rng);
      return rsa_type(key.GetModulus());
    }
    case KeyType::ec_p256: {
      EcPublicKey key;
      key.BERDecode(source);
      require_valid(key, rng);
      return type;
    }
    case KeyType::ed25519: {
      CryptoPP::ed25519PublicKey key;
      key.BERDecode(source);
      require_valid(key, rng);
      return type;
    }
  }
  throw KeyError("unsupported key algorithm");
}

}  // namespace

std::string_view to_string(KeyType type) noexcept {
  for (const auto& [candidate, name] : kKeyTypeNames) {
    if (candidate == type) return name;
  }
  return "unknown";
}

std::optional<KeyType> parse_key_type(std::string_view name) noexcept {
  for (const auto& [type, candidate] : kKeyTypeNames) {
    if (candidate == name) return type;
  }
  return std::nullopt;
}

KeyPair generate_key_pair(KeyType type) {
  CryptoPP::AutoSeededRandomPool rng;
  return generate_key_pair(type, rng);
}

KeyPair generate_key_pair(KeyType type, CryptoPP::RandomNumberGenerator& rng) {
  try {
    PrivateKey key{type, {}, {}, {}};
    switch (type) {
      case KeyType::rsa2048:
        key.rsa.Initialize(rng, 2048, 65537);
        break;
      case KeyType::rsa3072:
        key.rsa.Initialize(rng, 3072, 65537);
        break;
      case KeyType::rsa4096:
        key.rsa.Initialize(rng, 4096, 65537);
        break;
      case KeyType::ec_p256:
        key.ec.Initialize(rng, CryptoPP::ASN1::secp256r1());
        break;
      case KeyType::ed25519:
        key.ed.GenerateRandom(rng, CryptoPP::g_nullNameValuePairs);
        break;
    }
    return encode_pair(key);
  } catch (const CryptoPP::Exception& e) {
    throw KeyError("cannot generate a " + std::string(to_string(type)) + " key: " + e.what());
  }
}

KeyPair key_pair_from_private_pem(std::string_view private_pem) {
  try {
    auto [label, der] = pem_decode(private_pem, {kPrivateLabel, kRsaPrivateLabel});
    CryptoPP::AutoSeededRandomPool rng;
    CryptoPP::ArraySource source(der.data(), der.size(), true);
    PrivateKey key{KeyType::rsa2048, {}, {}, {}};
    if (label == kRsaPrivateLabel) {
      // PKCS#1 RSAPrivateKey (what PyCryptodome writes by default): read it, store it as PKCS#8.
      key.rsa.BERDecodePrivateKey(source, false, static_cast<std::size_t>(source.MaxRetrievable()));
    } else {
      key.type = pkcs8_type(der);
      switch (key.type) {
        case KeyType::rsa2048:
        case KeyType::rsa3072:
        case KeyType::rsa4096:
          key.rsa.BERDecode(source);
          break;
        case KeyType::ec_p256:
          key.ec.BERDecode(source);
          break;
        case KeyType::ed25519:
          key.ed.BERDecode(source);
          break;
      }
    }
    switch (key.type) {
      case KeyType::rsa2048:
      case KeyType::rsa3072:
      case KeyType::rsa4096:
        require_valid(key.rsa, rng);
        key.type = rsa_type(key.rsa.GetModulus());
        break;
      case KeyType::ec_p256:
        require_valid(key.ec, rng);
        break;
      case KeyType::ed25519:
        require_valid(key.ed, rng);
        break;
    }
    return encode_pair(key);
  } catch (const CryptoPP::Exception& e) {
    throw KeyError(std::string("not a usable private key: ") + e.what());
  }
}

std::string fingerprint(std::string_view public_pem) {
  try {
    auto [label, der] = pem_decode(public_pem, {kPublicLabel});
    decode_public(der);
    std::array<CryptoPP::byte, CryptoPP::SHA256::DIGESTSIZE> digest{};
    CryptoPP::SHA256().CalculateDigest(digest.data(), der.data(), der.size());
    std::string encoded;
    CryptoPP::ArraySource(digest.data(), digest.size(), true,
                          new CryptoPP::Base64Encoder(new CryptoPP::StringSink(encoded), false));
    while (!encoded.empty() && encoded.back() == '=') encoded.pop_back();
    return "SHA256:" + encoded;
  } catch (const CryptoPP::Exception& e) {
    throw KeyError(std::string("not a usable public key: ") + e.what());
  }
}

KeyType public_key_type(std::string_view public_pem) {
  try {
    return decode_public(pem_decode(public_pem, {kPublicLabel}).der);
  } catch (const CryptoPP::Exception& e) {
    throw KeyError(std::string("not a usable public key: ") + e.what());
  }
}

PemBlock pem_decode(std::string_view pem, std::initializer_list<std::string_view> labels) {
  for (std::string_view label : labels) {
    const std::string begin = "-----BEGIN " + std::string(label) + "-----";
    const std::string end = "-----END " + std::string(label) + "-----";
    const std::size_t begin_at = pem.find(begin);
    if (begin_at == std::string_view::npos) continue;
    const std::size_t body_at = begin_at + begin.size();
    const std::size_t end_at = pem.find(end, body_at);
    if (end_at == std::string_view::npos) throw KeyError("PEM block has no END line");
    const std::string_view body = pem.substr(body_at, end_at - body_at);
    for (char c : body) {
      if (!is_base64_or_space(c)) throw KeyError("PEM block holds a character that is not base64");
    }
    CryptoPP::ByteQueue queue;
    CryptoPP::StringSource(reinterpret_cast<const CryptoPP::byte*>(body.data()), body.size(), true,
                           new CryptoPP::Base64Decoder(new CryptoPP::Redirector(queue)));
    SecByteBlock der(static_cast<std::size_t>(queue.MaxRetrievable()));
    queue.Get(der, der.size());
    if (der.empty()) throw KeyError("PEM block is empty");
    return {std::string(label), std::move(der)};
  }
  std::string expected;
  for (std::string_view label : labels) {
    expected += (expected.empty() ? "\"" : " or \"") + std::string(label) + "\"";
  }
  throw KeyError("not a PEM " + expected + " block");
}

CryptoPP::RSA::PrivateKey rsa_private_key_from_pem(std::string_view pem) {
  const PemBlock block = pem_decode(pem, {"PRIVATE KEY", "RSA PRIVATE KEY"});
  try {
    CryptoPP::RSA::PrivateKey key;
    CryptoPP::ArraySource source(block.der.data(), block.der.size(), true);
    if (block.label == "RSA PRIVATE KEY")
      key.BERDecodePrivateKey(source, false, static_cast<std::size_t>(source.MaxRetrievable()));
    else
      key.BERDecode(source);  // throws for a PKCS#8 key of another algorithm
    return key;
  } catch (const CryptoPP::Exception& error) {
    throw KeyError(std::string("not an RSA private key: ") + error.what());
  }
}

CryptoPP::RSA::PublicKey rsa_public_key_from_pem(std::string_view pem) {
  const PemBlock block = pem_decode(pem, {"PUBLIC KEY", "RSA PUBLIC KEY"});
  try {
    CryptoPP::RSA::PublicKey key;
    CryptoPP::ArraySource source(block.der.data(), block.der.size(), true);
    if (block.label == "RSA PUBLIC KEY")
      key.BERDecodePublicKey(source, false, static_cast<std::size_t>(source.MaxRetrievable()));
    else
      key.BERDecode(source);
    CryptoPP::AutoSeededRandomPool rng;
    if (!key.Validate(rng, 1)) throw KeyError("the RSA public key fails validation");
    return key;
  } catch (const CryptoPP::Exception& error) {
    throw KeyError(std::string("not an RSA public key: ") + error.what());
  }
}

}  // namespace pa::keystore
