// A certificate authority for tests, made with the openssl CLI (not our code) in a folder of its
// own: roots, intermediates, CSRs for fresh keys, and leaves signed for a CSR at a controlled
// moment (Debian's `faketime` moves openssl's clock, so a leaf can be made already expired or not
// yet valid). Every command's failure throws std::runtime_error with openssl's output.
#pragma once

#include <string>

#include "test_support.hpp"

namespace pa::test {

class TestPki {
 public:
  struct Ca {
    std::string cert;  // PEM files
    std::string key;
  };

  // A self-signed CA (EC P-256, ten years), CN=<name>.
  Ca root(const std::string& name);
  // A CA certified by `parent`, CN=<name>.
  Ca intermediate(const Ca& parent, const std::string& name);
  // A CSR for a fresh EC P-256 key that is nobody's device key, CN=<common_name>; its PEM file.
  std::string new_csr(const std::string& name, const std::string& common_name);
  // A leaf for `csr_file` signed by `ca`, valid for `days` from now, where now is moved by
  // faketime's `offset` ("-20d", "+10d") when one is given; its PEM file.
  std::string sign(const std::string& csr_file, const Ca& ca, int days,
                   const std::string& offset = {});
  // A file in the PKI's folder.
  std::string file(const std::string& name) const { return dir_.file(name); }

 private:
  void sign_to(const std::string& csr_file, const Ca& ca, int days, const std::string& offset,
               const std::string& out, const std::string& extensions_file);

  TempDir dir_;
  int serial_ = 1000;
};

}  // namespace pa::test
