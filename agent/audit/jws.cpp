#include "audit/jws.hpp"

#include <cryptopp/base64.h>
#include <cryptopp/filters.h>
#include <cryptopp/osrng.h>
#include <cryptopp/pssr.h>
#include <cryptopp/rsa.h>
#include <cryptopp/sha.h>
#include <rapidjson/document.h>

#include <initializer_list>

#include "base/json_writer.hpp"
#include "keystore/key_pair.hpp"

namespace pa::audit {
namespace {

using Signer = CryptoPP::RSASS<CryptoPP::PKCS1v15, CryptoPP::SHA256>::Signer;
using Verifier = CryptoPP::RSASS<CryptoPP::PKCS1v15, CryptoPP::SHA256>::Verifier;
using keystore::KeyError;

const CryptoPP::byte* bytes_of(std::string_view text) {
  return reinterpret_cast<const CryptoPP::byte*>(text.data());
}

std::optional<std::string> fail(std::string* why, const char* reason) {
  if (why) *why = reason;
  return std::nullopt;
}

}  // namespace

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  CryptoPP::StringSource(bytes_of(bytes), bytes.size(), true,
                         new CryptoPP::Base64URLEncoder(new CryptoPP::StringSink(out)));
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  // Crypto++'s decoder skips characters outside its alphabet; a damaged signature must fail.
  if (text.size() % 4 == 1) return std::nullopt;
  for (const char c : text) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok) return std::nullopt;
  }
  std::string out;
  CryptoPP::StringSource(bytes_of(text), text.size(), true,
                         new CryptoPP::Base64URLDecoder(new CryptoPP::StringSink(out)));
  // Unused low bits of the last character must be zero, so one signature has one spelling.
  if (base64url_encode(out) != text) return std::nullopt;
  return out;
}

std::string jws_rs256(std::string_view payload_json, std::string_view private_pem,
                      std::string_view kid) {
  JsonObjectWriter header;
  header.field("alg", "RS256").field("kid", kid);
  const std::string signing_input =
      base64url_encode(header.str()) + "." + base64url_encode(payload_json);
  Signer signer(keystore::rsa_private_key_from_pem(private_pem));
  CryptoPP::AutoSeededRandomPool rng;
  std::string signature(signer.MaxSignatureLength(), '\0');
  const std::size_t length =
      signer.SignMessage(rng, bytes_of(signing_input), signing_input.size(),
                         reinterpret_cast<CryptoPP::byte*>(signature.data()));
  signature.resize(length);
  return signing_input + "." + base64url_encode(signature);
}

std::optional<std::string> jws_rs256_verify(std::string_view jws, std::string_view public_pem,
                                            std::string* why) {
  const std::size_t first = jws.find('.');
  const std::size_t second = first == std::string_view::npos ? first : jws.find('.', first + 1);
  if (second == std::string_view::npos || jws.find('.', second + 1) != std::string_view::npos)
    return fail(why, "not a compact JWS (three base64url parts joined by dots)");
  const auto header = base64url_decode(jws.substr(0, first));
  const auto payload = base64url_decode(jws.substr(first + 1, second - first - 1));
  const auto signature = base64url_decode(jws.substr(second + 1));
  if (!header || !payload || !signature) return fail(why, "a part is not base64url");
  rapidjson::Document doc;
  doc.Parse(header->data(), header->size());
  if (doc.HasParseError() || !doc.IsObject()) return fail(why, "the header is not a JSON object");
  const auto alg = doc.FindMember("alg");
  if (alg == doc.MemberEnd() || !alg->value.IsString() ||
      std::string_view(alg->value.GetString(), alg->value.GetStringLength()) != "RS256")
    return fail(why, "the header's alg is not RS256");
  try {
    const Verifier verifier(keystore::rsa_public_key_from_pem(public_pem));
    const std::string_view signing_input = jws.substr(0, second);
    if (!verifier.VerifyMessage(bytes_of(signing_input), signing_input.size(), bytes_of(*signature),
                                signature->size()))
      return fail(why, "the signature does not verify with this public key");
  } catch (const KeyError&) {
    return fail(why, "the public key is not an RSA public key");
  } catch (const CryptoPP::Exception&) {
    return fail(why, "the signature does not verify with this public key");
  }
  return payload;
}

}  // namespace pa::audit
