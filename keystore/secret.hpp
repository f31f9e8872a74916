#pragma once
// The one home for secrets in memory (private key PEM text, decrypted requests): bytes in a
// Crypto++ SecByteBlock, wiped when freed or replaced, never copied by accident (move-only), and
// always followed by a NUL so that C code (plugins, OpenSSL) can read it where it lies. Nothing
// else in the project hand-writes a wipe.
#include <cryptopp/secblock.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>

namespace pa::keystore {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string_view text) { assign(text); }
  // Takes the text of a std::string that some library handed over, and wipes that string.
  static Secret take(std::string&& text) {
    Secret secret(text);
    wipe(text);
    return secret;
  }
  Secret(Secret&& other) noexcept { bytes_.swap(other.bytes_); }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      bytes_.CleanNew(0);
      bytes_.swap(other.bytes_);
    }
    return *this;
  }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;

  std::string_view view() const noexcept {
    return bytes_.empty()
               ? std::string_view()
               : std::string_view(reinterpret_cast<const char*>(bytes_.data()), bytes_.size() - 1);
  }
  // NUL-terminated; valid as long as the Secret is.
  const char* c_str() const noexcept {
    return bytes_.empty() ? "" : reinterpret_cast<const char*>(bytes_.data());
  }
  std::size_t size() const noexcept { return bytes_.empty() ? 0 : bytes_.size() - 1; }
  bool empty() const noexcept { return size() == 0; }

  // Overwrites a std::string's characters (for copies a library made that must not linger).
  static void wipe(std::string& text) noexcept {
    if (!text.empty())
      CryptoPP::SecureWipeBuffer(reinterpret_cast<CryptoPP::byte*>(text.data()), text.size());
    text.clear();
  }

 private:
  void assign(std::string_view text) {
    // Bounded, so that the + 1 below cannot wrap (and GCC's overflow check knows it).
    if (text.size() > std::numeric_limits<std::uint32_t>::max())
      throw std::length_error("a secret of more than 4 GiB");
    bytes_.CleanNew(text.size() + 1);  // zeroed: the last byte stays the NUL
    std::copy(text.begin(), text.end(), reinterpret_cast<char*>(bytes_.data()));
  }

  CryptoPP::SecByteBlock bytes_;
};

}  // namespace pa::keystore
