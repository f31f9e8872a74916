#include "intake/jws.hpp"

#include <cryptopp/base64.h>
#include <cryptopp/osrng.h>
#include <cryptopp/rsa.h>

#include "base/json_writer.hpp"
#include "intake/envelope.hpp"

namespace pa {

std::string base64url(std::string_view bytes) {
  std::string out;
  CryptoPP::StringSource(reinterpret_cast<const CryptoPP::byte*>(bytes.data()), bytes.size(), true,
                         new CryptoPP::Base64URLEncoder(new CryptoPP::StringSink(out), false));
  return out;
}

std::string jws_rs256(std::string_view payload_json, std::string_view private_pem,
                      std::string_view kid) {
  JsonObjectWriter header;
  header.field("alg", "RS256").field("kid", kid);
  const std::string signing_input = base64url(header.str()) + "." + base64url(payload_json);
  const CryptoPP::RSA::PrivateKey key = e2ee::rsa_private_key_from_pem(private_pem);
  CryptoPP::RSASS<CryptoPP::PKCS1v15, CryptoPP::SHA256>::Signer signer(key);
  CryptoPP::AutoSeededRandomPool rng;
  std::string signature;
  CryptoPP::StringSource(
      signing_input, true,
      new CryptoPP::SignerFilter(rng, signer, new CryptoPP::StringSink(signature)));
  return signing_input + "." + base64url(signature);
}

}  // namespace pa
