#pragma once
// X.509 for the key store (SPEC sections 3.2 and 5), the one thing done with OpenSSL's libcrypto
// rather than Crypto++ (which has no X.509): PKCS#10 certificate requests made with a stored key,
// and the checks a certificate passes before it is stored beside its key. Keys stay Crypto++'s:
// OpenSSL only reads their PEM.
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace pa::keystore {

// Why a certificate cannot be installed; what() is the reason for the response.
struct CertificateError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A PEM PKCS#10 request made with `private_pem` (PKCS#8, any key type of the store), subject
// CN=<common_name> plus OU=<unit> when given, signed with SHA-256 (Ed25519: pure EdDSA).
// Throws KeyError.
std::string make_csr(std::string_view private_pem, const std::string& common_name,
                     const std::optional<std::string>& unit);

// What the agent reads of a certificate.
struct CertificateInfo {
  std::string subject;      // RFC 2253 form
  std::int64_t not_before;  // Unix seconds
  std::int64_t not_after;
};

// The checks of SPEC section 5 on `chain_pem` (the leaf first, then an optional chain; PEM blocks
// other than CERTIFICATE are refused, as the text is stored world-readable): the leaf
// certifies `public_pem` (SubjectPublicKeyInfo), `now` (Unix seconds) is within its validity
// dates, and with `ca_file` (PROVISION_CA_FILE) it chains to that CA at `now`. Returns the leaf's
// details, or throws CertificateError with the reason.
CertificateInfo check_certificate(std::string_view chain_pem, std::string_view public_pem,
                                  std::int64_t now, const std::optional<std::string>& ca_file);

// The first certificate of `pem`'s details, or nullopt when it holds none that parses.
std::optional<CertificateInfo> read_certificate_info(std::string_view pem);

}  // namespace pa::keystore
