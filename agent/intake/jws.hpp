#pragma once
// JWS compact serialisation (RFC 7515) with RS256, the form of the agent's signed statements:
// the attestation of every published key (SPEC 3.2) and the audit log's checkpoints (SPEC 5).
// A server verifies them with any JWS library, or a few lines of PyCryptodome (pkcs1_15 over
// "<header>.<payload>"), against the agent's public key, pinned once.
#include <string>
#include <string_view>

namespace pa {

// base64url without padding (RFC 7515 section 2).
std::string base64url(std::string_view bytes);

// "<header>.<payload>.<signature>": header {"alg":"RS256","kid":<kid>}, the payload as given (its
// exact bytes are what is signed), signed with the RSA private key `private_pem` (PKCS#8 or
// PKCS#1). Throws keystore::KeyError for a key that is not RSA.
std::string jws_rs256(std::string_view payload_json, std::string_view private_pem,
                      std::string_view kid);

}  // namespace pa
