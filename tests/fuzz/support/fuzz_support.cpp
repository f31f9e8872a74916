#include "fuzz_support.hpp"

#include <cryptopp/aes.h>
#include <cryptopp/base64.h>
#include <cryptopp/filters.h>
#include <cryptopp/modes.h>
#include <cryptopp/rsa.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <system_error>
#include <variant>
#include <vector>

#include "intake/envelope.hpp"

namespace pa::fuzz {
namespace {

struct TestKey {
  std::string private_pem;
  std::string public_pem;
};

template <class Key>
std::string pem(const char* label, const Key& key) {
  std::string der;
  CryptoPP::StringSink sink(der);
  key.DEREncode(sink);
  std::string body;
  CryptoPP::StringSource(der, true,
                         new CryptoPP::Base64Encoder(new CryptoPP::StringSink(body), true, 64));
  if (!body.empty() && body.back() != '\n') body += '\n';
  return std::string("-----BEGIN ") + label + "-----\n" + body + "-----END " + label + "-----\n";
}

TestKey derive_test_key() {
  // A deterministic generator: AES-OFB's key stream under a fixed key and IV.
  static constexpr char kSeed[] = "provision-agent fuzz test key 1";  // 32 bytes with the NUL
  static_assert(sizeof kSeed == 32);
  CryptoPP::OFB_Mode<CryptoPP::AES>::Encryption generator;
  generator.SetKeyWithIV(reinterpret_cast<const CryptoPP::byte*>(kSeed), 16,
                         reinterpret_cast<const CryptoPP::byte*>(kSeed) + 16, 16);
  CryptoPP::RSA::PrivateKey private_key;
  private_key.Initialize(generator, 1024, 65537);
  CryptoPP::RSA::PublicKey public_key;
  public_key.AssignFrom(private_key);
  return {pem("PRIVATE KEY", private_key), pem("PUBLIC KEY", public_key)};
}

const TestKey& test_key() {
  static const TestKey key = derive_test_key();
  return key;
}

}  // namespace

const std::string& test_private_pem() {
  return test_key().private_pem;
}

const std::string& test_public_pem() {
  return test_key().public_pem;
}

Decryptor test_key_decryptor() {
  return [](const Envelope& envelope,
            const std::string& /*device_id*/) -> std::variant<std::string, RequestError> {
    std::string why;
    auto plaintext = e2ee::open_envelope(envelope, test_private_pem(), &why);
    if (!plaintext) {
      PA_FUZZ_CHECK(!why.empty(), "open_envelope refused an envelope without saying why");
      return RequestError{ErrorCode::decrypt_failed, why};
    }
    return std::string(reinterpret_cast<const char*>(plaintext->data()), plaintext->size());
  };
}

std::string action_alias(std::string_view name) {
  if (name == "request" || name == "generate") return kActionGenerate;
  if (name == "rotate") return kActionUpdate;
  return std::string(name);
}

MemoryFile::MemoryFile() : fd_(::memfd_create("pa-fuzz-input", MFD_CLOEXEC)) {
  if (!fd_) throw std::system_error(errno, std::generic_category(), "memfd_create");
  path_ = "/proc/self/fd/" + std::to_string(fd_.get());
}

void MemoryFile::assign(std::string_view content) {
  if (::ftruncate(fd_.get(), 0) != 0)
    throw std::system_error(errno, std::generic_category(), "ftruncate");
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t written =
        ::pwrite(fd_.get(), content.data() + done, content.size() - done, static_cast<off_t>(done));
    if (written < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "pwrite");
    }
    done += static_cast<std::size_t>(written);
  }
}

ScratchDir::ScratchDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/pa-fuzz-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr)
    throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
  path_ = buffer.data();
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void write_file(const std::filesystem::path& path, std::string_view content) {
  const keystore::UniqueFd fd(
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) throw std::system_error(errno, std::generic_category(), "open " + path.string());
  while (!content.empty()) {
    const ssize_t written = ::write(fd.get(), content.data(), content.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write " + path.string());
    }
    content.remove_prefix(static_cast<std::size_t>(written));
  }
}

void invariant_failed(const char* file, int line, const char* condition, std::string_view detail) {
  std::fprintf(stderr, "\n==%d== INVARIANT BROKEN at %s:%d: %s\n    %.*s\n", ::getpid(), file, line,
               condition, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

}  // namespace pa::fuzz
