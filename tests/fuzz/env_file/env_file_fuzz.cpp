// parse_env_file (SPEC section 2, systemd's EnvironmentFile= rules) on a file holding the input.
//
// A file is either refused with a ConfigError or gives variables with valid names; every value
// that single quotes can hold literally reads back the same when written as NAME='value'.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace pa;

bool is_env_name(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  for (char c : name) {
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && c != '_') return false;
  }
  return true;
}

// Single quotes keep everything literally except a quote; control characters stay out of it
// (systemd ends a line at \r too).
bool single_quotable(std::string_view value) {
  for (char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\'' || byte < 0x20 || byte == 0x7f) return false;
  }
  return true;
}

std::map<std::string, std::string> parse(fuzz::MemoryFile& file, std::string_view content) {
  file.assign(content);
  return parse_env_file(file.path());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::MemoryFile file;
  std::map<std::string, std::string> values;
  try {
    values = parse(file, fuzz::as_text(data, size));
  } catch (const ConfigError& error) {
    PA_FUZZ_CHECK(std::string_view(error.what()).find('\n') == std::string_view::npos,
                  error.what());
    return 0;
  }
  std::string rewritten;
  std::map<std::string, std::string> expected;
  for (const auto& [name, value] : values) {
    PA_FUZZ_CHECK(is_env_name(name), name);
    if (!single_quotable(value)) continue;
    rewritten += name + "='" + value + "'\n";
    expected[name] = value;
  }
  std::map<std::string, std::string> reread;
  try {
    reread = parse(file, rewritten);
  } catch (const ConfigError& error) {
    PA_FUZZ_CHECK(false, std::string(error.what()) + " for:\n" + rewritten);
  }
  PA_FUZZ_CHECK(reread == expected, rewritten);
  return 0;
}
