#pragma once
// JWS compact serialisation with RS256 (RFC 7515, RFC 7518 section 3.3): what the agent signs
// with its own key so that a server which pinned the agent's public key can check where a
// message came from: audit checkpoints (SPEC section 5) and key attestations (SPEC 3.2).
//
//   BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)
//
// header = {"alg":"RS256","kid":<kid>} (these bytes, in this order), payload = the given JSON
// bytes unchanged, signature = RSASSA-PKCS1-v1_5 with SHA-256 over the ASCII signing input
// "BASE64URL(header).BASE64URL(payload)"; base64url without padding (RFC 7515 section 2). Any JWS
// library verifies it, and so do a few lines of PyCryptodome:
//   pkcs1_15.new(key).verify(SHA256.new(signing_input), base64url_decode(signature))
#include <optional>
#include <string>
#include <string_view>

namespace pa::audit {

// RFC 4648 section 5 without padding.
std::string base64url_encode(std::string_view bytes);
// Strict: only the url-safe alphabet, no padding, no whitespace, a length that can be such an
// encoding; nullopt otherwise.
std::optional<std::string> base64url_decode(std::string_view text);

// Signs `payload_json` with an RSA private key (PEM: PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA PRIVATE
// KEY"); `kid` names the key (the agent key's fingerprint, SPEC 3.2). The key is parsed for this
// call only and not kept. Throws keystore::KeyError when the PEM is not an RSA private key.
std::string jws_rs256(std::string_view payload_json, std::string_view private_pem,
                      std::string_view kid);

// Checks a compact JWS made by jws_rs256 against an RSA public key PEM ("PUBLIC KEY" or "RSA
// PUBLIC KEY"): three parts, a header whose "alg" is "RS256", and a signature that verifies.
// Returns the payload bytes, or nullopt with a short reason in `why` (optional). Never throws for
// malformed input (it may come from anywhere); a key that is not an RSA public key is a reason.
std::optional<std::string> jws_rs256_verify(std::string_view jws, std::string_view public_pem,
                                            std::string* why = nullptr);

}  // namespace pa::audit
