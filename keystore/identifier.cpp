#include "identifier.hpp"

#include "file_names.hpp"

namespace pa::keystore {
namespace {

// Plain ASCII tests: std::isalnum depends on the locale and would accept more than SPEC 3.1 allows.
constexpr bool is_ascii_alnum(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

}  // namespace

bool is_valid_identifier(std::string_view id) noexcept {
  if (id.empty() || id.size() > kMaxIdentifierLength || !is_ascii_alnum(id.front())) return false;
  for (char c : id) {
    if (!is_ascii_alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  for (const char* name : kDeviceFiles) {
    if (id == name) return false;
  }
  return true;
}

}  // namespace pa::keystore
