#include "test_pki.hpp"

#include <fmt/format.h>

#include <stdexcept>

namespace pa::test {
namespace {

void openssl(const std::string& arguments) {
  const auto result = run_command("openssl " + arguments + " 2>&1");
  if (result.exit_code != 0)
    throw std::runtime_error(fmt::format("openssl {} failed:\n{}", arguments, result.output));
}

}  // namespace

TestPki::Ca TestPki::root(const std::string& name) {
  const Ca ca{dir_.file(name + ".pem"), dir_.file(name + ".key")};
  openssl(
      fmt::format("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {} -out {} "
                  "-subj {} -days 3650",
                  shell_quote(ca.key), shell_quote(ca.cert), shell_quote("/CN=" + name)));
  return ca;
}

TestPki::Ca TestPki::intermediate(const Ca& parent, const std::string& name) {
  const std::string csr = new_csr(name, name);
  const std::string extensions = dir_.file(name + ".ext");
  write_file(extensions, "basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n");
  const Ca ca{dir_.file(name + ".pem"), dir_.file(name + ".key")};
  sign_to(csr, parent, 3650, {}, ca.cert, extensions);
  return ca;
}

std::string TestPki::new_csr(const std::string& name, const std::string& common_name) {
  const std::string csr = dir_.file(name + ".csr");
  openssl(fmt::format(
      "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {} -out {} -subj {}",
      shell_quote(dir_.file(name + ".key")), shell_quote(csr), shell_quote("/CN=" + common_name)));
  return csr;
}

std::string TestPki::sign(const std::string& csr_file, const Ca& ca, int days,
                          const std::string& offset) {
  const std::string leaf = dir_.file(fmt::format("leaf-{}.pem", serial_ + 1));
  sign_to(csr_file, ca, days, offset, leaf, {});
  return leaf;
}

void TestPki::sign_to(const std::string& csr_file, const Ca& ca, int days,
                      const std::string& offset, const std::string& out,
                      const std::string& extensions_file) {
  const std::string command = fmt::format(
      "x509 -req -in {} -CA {} -CAkey {} -set_serial {} -days {} -out {}{}", shell_quote(csr_file),
      shell_quote(ca.cert), shell_quote(ca.key), ++serial_, days, shell_quote(out),
      extensions_file.empty() ? "" : " -extfile " + shell_quote(extensions_file));
  if (offset.empty()) return openssl(command);
  const auto result =
      run_command("faketime -f " + shell_quote(offset) + " openssl " + command + " 2>&1");
  if (result.exit_code != 0)
    throw std::runtime_error(
        fmt::format("faketime -f {} openssl {} failed (is Debian's faketime "
                    "installed? scripts/deps.sh):\n{}",
                    offset, command, result.output));
}

}  // namespace pa::test
