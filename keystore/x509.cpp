#include "x509.hpp"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <memory>
#include <vector>

#include "key_pair.hpp"

namespace pa::keystore {
namespace {

// Move-only owners of OpenSSL handles.
template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* handle) const noexcept { Free(handle); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Request = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using Certificate = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Store = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreContext = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
void free_certificates(STACK_OF(X509) * stack) {
  sk_X509_pop_free(stack, X509_free);
}
using Certificates = std::unique_ptr<STACK_OF(X509), Deleter<STACK_OF(X509), free_certificates>>;

// OpenSSL's last error as text (and the queue emptied), for messages.
std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

Bio memory(std::string_view text) {
  Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  if (!bio) throw std::bad_alloc();
  return bio;
}

std::string read_bio(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::int64_t unix_time(const ASN1_TIME* time) {
  std::tm tm{};
  if (!ASN1_TIME_to_tm(time, &tm)) return 0;
  return static_cast<std::int64_t>(timegm(&tm));
}

std::string subject_of(X509* certificate) {
  Bio out(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(out.get(), X509_get_subject_name(certificate), 0, XN_FLAG_RFC2253);
  return read_bio(out.get());
}

CertificateInfo info_of(X509* certificate) {
  return CertificateInfo{subject_of(certificate), unix_time(X509_get0_notBefore(certificate)),
                         unix_time(X509_get0_notAfter(certificate))};
}

// Every certificate in a PEM text, in order.
std::vector<Certificate> read_all(std::string_view pem) {
  std::vector<Certificate> certificates;
  Bio in = memory(pem);
  while (X509* certificate = PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr))
    certificates.emplace_back(certificate);
  ERR_clear_error();  // the end of the input reads as an error
  return certificates;
}

std::string utc(std::int64_t seconds) {
  const std::time_t time = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&time, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// sensor_cert.pem is readable by every local user, so only certificates may go there: a private
// key sent along by mistake is refused, not stored. Text outside PEM blocks (comments) is allowed.
void require_certificate_blocks_only(std::string_view pem) {
  constexpr std::string_view kBegin = "-----BEGIN ";
  for (std::size_t at = pem.find(kBegin); at != std::string_view::npos;
       at = pem.find(kBegin, at + 1)) {
    const std::size_t start = at + kBegin.size();
    const std::size_t end = pem.find("-----", start);
    std::string_view label = end == std::string_view::npos ? std::string_view("(unterminated)")
                                                           : pem.substr(start, end - start);
    if (label == "CERTIFICATE") continue;
    if (label.size() > 40 || label.find('\n') != std::string_view::npos) label = "(malformed)";
    throw CertificateError(
        fmt::format("the certificate field holds a {} block: only certificates "
                    "(-----BEGIN CERTIFICATE-----) are stored",
                    label));
  }
}

}  // namespace

std::string make_csr(std::string_view private_pem, const std::string& common_name,
                     const std::optional<std::string>& unit) {
  Bio in = memory(private_pem);
  Key key(PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr));
  if (!key) throw KeyError("not a private key OpenSSL reads: " + openssl_error());
  Request request(X509_REQ_new());
  if (!request) throw std::bad_alloc();
  X509_REQ_set_version(request.get(), 0);  // the only version PKCS#10 defines
  X509_NAME* name = X509_REQ_get_subject_name(request.get());
  auto add = [&](const char* field, const std::string& value) {
    if (!X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                    0))
      throw KeyError(fmt::format("cannot put {}={} in a certificate request: {}", field, value,
                                 openssl_error()));
  };
  add("CN", common_name);
  if (unit) add("OU", *unit);
  if (!X509_REQ_set_pubkey(request.get(), key.get()))
    throw KeyError("cannot put the key in a certificate request: " + openssl_error());
  // Ed25519 signs the message itself: no digest is given.
  const EVP_MD* digest = EVP_PKEY_id(key.get()) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  if (X509_REQ_sign(request.get(), key.get(), digest) <= 0)
    throw KeyError("cannot sign the certificate request: " + openssl_error());
  Bio out(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509_REQ(out.get(), request.get()))
    throw KeyError("cannot write the certificate request: " + openssl_error());
  return read_bio(out.get());
}

CertificateInfo check_certificate(std::string_view chain_pem, std::string_view public_pem,
                                  std::int64_t now, const std::optional<std::string>& ca_file) {
  require_certificate_blocks_only(chain_pem);
  std::vector<Certificate> chain = read_all(chain_pem);
  if (chain.empty()) throw CertificateError("no PEM certificate (-----BEGIN CERTIFICATE-----)");
  X509* leaf = chain.front().get();
  const CertificateInfo info = info_of(leaf);

  // The leaf must certify the device's current key: the same SubjectPublicKeyInfo bytes.
  const PemBlock ours = pem_decode(public_pem, {"PUBLIC KEY"});
  unsigned char* der = nullptr;
  const int length = i2d_PUBKEY(X509_get0_pubkey(leaf), &der);
  if (length <= 0) throw CertificateError("the certificate's public key cannot be read");
  const std::unique_ptr<unsigned char, void (*)(void*)> owned(der,
                                                              [](void* p) { OPENSSL_free(p); });
  if (static_cast<std::size_t>(length) != ours.der.size() ||
      !std::equal(ours.der.begin(), ours.der.end(), der))
    throw CertificateError(fmt::format(
        "the certificate ({}) is for another key than the device's current one", info.subject));

  if (now < info.not_before)
    throw CertificateError(fmt::format("the certificate is not valid before {} (now {})",
                                       utc(info.not_before), utc(now)));
  // Expired from its notAfter second on, as OpenSSL's chain check and rotation_due() count it.
  if (now >= info.not_after)
    throw CertificateError(
        fmt::format("the certificate expired at {} (now {})", utc(info.not_after), utc(now)));

  if (ca_file) {
    Store store(X509_STORE_new());
    if (!store || !X509_STORE_load_file(store.get(), ca_file->c_str()))
      throw CertificateError(
          fmt::format("cannot read PROVISION_CA_FILE {}: {}", *ca_file, openssl_error()));
    Certificates untrusted(sk_X509_new_null());
    for (std::size_t i = 1; i < chain.size(); ++i) {
      if (!sk_X509_push(untrusted.get(), chain[i].get())) throw std::bad_alloc();
      chain[i].release();  // the stack owns it now
    }
    StoreContext context(X509_STORE_CTX_new());
    if (!context || !X509_STORE_CTX_init(context.get(), store.get(), leaf, untrusted.get()))
      throw CertificateError("cannot set up the certificate check: " + openssl_error());
    X509_STORE_CTX_set_time(context.get(), 0, static_cast<std::time_t>(now));
    if (X509_verify_cert(context.get()) != 1)
      throw CertificateError(
          fmt::format("the certificate does not chain to PROVISION_CA_FILE: {}",
                      X509_verify_cert_error_string(X509_STORE_CTX_get_error(context.get()))));
  }
  return info;
}

std::optional<CertificateInfo> read_certificate_info(std::string_view pem) {
  std::vector<Certificate> chain = read_all(pem);
  if (chain.empty()) return std::nullopt;
  return info_of(chain.front().get());
}

}  // namespace pa::keystore
