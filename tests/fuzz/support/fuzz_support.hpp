#pragma once
// What the fuzz targets share: the deterministic RSA test key and a decryptor built on it, the
// plugins' action aliases, a memfd that gives an input a file path, a scratch folder, and the
// invariant check that turns a broken promise of the code under test into a libFuzzer crash.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "intake/request.hpp"
#include "keystore/file_util.hpp"

namespace pa::fuzz {

// The fuzz targets' RSA key as PKCS#8 and SubjectPublicKeyInfo PEM. It is derived at first use
// from a fixed seed with an AES-OFB generator, so every process and every run has the same key
// and envelopes sealed to it stay valid seeds; no key is stored anywhere. 1024 bits keeps one
// RSA decryption per input cheap (open_envelope takes any RSA size).
const std::string& test_private_pem();
const std::string& test_public_pem();

// The agent's decryptor (Agent::decrypt) with the test key as the only key to try: the
// plaintext, or decrypt_failed with open_envelope's reason.
Decryptor test_key_decryptor();

// The alias table the bundled keygen plugin declares (request, generate ->
// generate_and_publish_key; rotate -> update), as tests/unit/request_test.cpp has it: the decoder
// knows no action names of its own. Any other name comes back unchanged.
std::string action_alias(std::string_view name);

// The bytes libFuzzer hands over, as text.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// An anonymous in-memory file (memfd_create) reachable by path, /proc/self/fd/N, for parsers
// that read a file.
class MemoryFile {
 public:
  MemoryFile();
  // Replaces the whole content.
  void assign(std::string_view content);
  const std::string& path() const { return path_; }

 private:
  keystore::UniqueFd fd_;
  std::string path_;
};

// A private folder made with mkdtemp under $TMPDIR (scripts/fuzz.sh points it at /dev/shm, where
// fsync costs nothing), removed with its content when the object dies.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Writes `content` to `path` (created or truncated), without fsync. Throws std::system_error.
void write_file(const std::filesystem::path& path, std::string_view content);

// Prints what broke and aborts, so libFuzzer keeps the input as a crash.
[[noreturn]] void invariant_failed(const char* file, int line, const char* condition,
                                   std::string_view detail);

}  // namespace pa::fuzz

// Checks an invariant of the code under test; `detail` (a string) is only built when it fails.
#define PA_FUZZ_CHECK(condition, detail)                                                    \
  do {                                                                                      \
    if (!(condition)) ::pa::fuzz::invariant_failed(__FILE__, __LINE__, #condition, detail); \
  } while (false)
