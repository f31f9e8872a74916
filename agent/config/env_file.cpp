// A port of systemd v252's environment-file parser (src/basic/env-file.c,
// parse_env_file_internal() and load_env_file_push()) and of what the service manager does with
// its result (src/core/execute.c: strv_env_clean_with_callback() with env_assignment_is_valid()
// from src/basic/env-util.c). The state machine below keeps systemd's states and its order of
// checks, so a reader can hold the two side by side.
#include "config/env_file.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <unordered_map>

namespace pa {
namespace {

// systemd's string-util.h and escape.h sets.
constexpr std::string_view kWhitespace = " \t\n\r";
constexpr std::string_view kNewline = "\n\r";
constexpr std::string_view kComments = "#;";
constexpr std::string_view kShellNeedEscape = "\"\\`$";

bool in(std::string_view set, char c) {
  return set.find(c) != std::string_view::npos;
}

// POSIX bounds one environment block by ARG_MAX (env_name_is_valid_n, env_value_is_valid,
// env_assignment_is_valid leave room for "=" and the NUL).
std::size_t arg_max() {
  const long value = sysconf(_SC_ARG_MAX);
  return value > 0 ? static_cast<std::size_t>(value) : 131072;
}

// Names in log lines: control characters escaped so one warning stays one line.
std::string printable(std::string_view text) {
  std::string out;
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  return out;
}

// Collects pushed assignments as load_env_file_push() does: a later assignment of a name replaces
// the earlier one in place (strv_env_replace_consume).
class Assignments {
 public:
  void push(EnvAssignment assignment) {
    const auto found = index_.find(assignment.name);
    if (found != index_.end()) {
      EnvAssignment& earlier = list_[found->second];
      earlier.value = std::move(assignment.value);
      earlier.line = assignment.line;
      return;
    }
    index_.emplace(assignment.name, list_.size());
    list_.push_back(std::move(assignment));
  }

  // strv_env_clean_with_callback(): assignments that are not valid environment entries are
  // dropped, each with a log line (systemd: "Ignoring invalid environment assignment").
  void take_valid(EnvFileContents& contents) && {
    const std::size_t limit = arg_max();
    for (EnvAssignment& assignment : list_) {
      std::string why;
      if (!env_name_is_valid(assignment.name)) {
        why = fmt::format("ignoring \"{}\": not a valid variable name", printable(assignment.name));
        if (assignment.name.rfind("export", 0) == 0 && assignment.name.size() > 6 &&
            in(kWhitespace, assignment.name[6])) {
          why += " (systemd's EnvironmentFile= has no `export` prefix)";
        } else {
          why += " (letters, digits and _, not starting with a digit)";
        }
      } else if (assignment.value.size() > limit - 3 ||
                 assignment.name.size() + 1 + assignment.value.size() > limit - 1) {
        why = fmt::format("ignoring {}: the value is longer than ARG_MAX allows", assignment.name);
      }
      if (why.empty()) {
        contents.assignments.push_back(std::move(assignment));
      } else {
        contents.warnings.push_back(EnvFileWarning{assignment.line, std::move(why)});
      }
    }
  }

 private:
  std::vector<EnvAssignment> list_;
  std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace

bool env_name_is_valid(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  if (name.size() > arg_max() - 2) return false;
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool env_utf8_is_valid(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead == 0) return false;  // utf8_is_valid_n(): embedded NUL
    std::size_t length;
    std::uint32_t code;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xe0) == 0xc0) {
      length = 2;
      code = lead & 0x1f;
    } else if ((lead & 0xf0) == 0xe0) {
      length = 3;
      code = lead & 0x0f;
    } else if ((lead & 0xf8) == 0xf0) {
      length = 4;
      code = lead & 0x07;
    } else {
      // systemd also decodes 5- and 6-byte forms, but they all lie past U+10FFFF: invalid.
      return false;
    }
    if (text.size() - i < length) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    const std::size_t shortest = code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
    if (shortest != length) return false;                // overlong
    if (code >= 0x110000) return false;                  // end of Unicode
    if ((code & 0xfffff800) == 0xd800) return false;     // UTF-16 surrogates
    if (code >= 0xfdd0 && code <= 0xfdef) return false;  // noncharacters
    if ((code & 0xfffe) == 0xfffe) return false;         // U+xxFFFE, U+xxFFFF
    i += length;
  }
  return true;
}

std::vector<EnvAssignment> scan_env_text(std::string_view text,
                                         std::vector<EnvFileWarning>& warnings) {
  // read_full_file() refuses a file with a NUL byte: its C string would end early.
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    const std::size_t line = 1 + static_cast<std::size_t>(std::count(
                                     text.begin(), text.begin() + static_cast<long>(nul), '\n'));
    throw EnvFileError(line, fmt::format("line {}: contains a NUL byte", line));
  }

  enum class State {
    pre_key,
    key,
    pre_value,
    value,
    value_escape,
    single_quote_value,
    double_quote_value,
    double_quote_value_escape,
    comment,
    comment_escape,
  };
  constexpr std::size_t kNone = std::string::npos;  // systemd's SIZE_MAX

  std::vector<EnvAssignment> pushed;
  State state = State::pre_key;
  std::string key;
  std::string value;
  std::size_t last_key_whitespace = kNone;
  std::size_t last_value_whitespace = kNone;
  std::size_t line = 1;      // physical line of the character being read
  std::size_t key_line = 1;  // line where the current key began

  auto push = [&] {
    // "strip trailing whitespace from key"
    if (last_key_whitespace != kNone) key.resize(last_key_whitespace);
    // load_env_file_push(): check_utf8ness_and_warn() fails the whole load on invalid UTF-8.
    if (!env_utf8_is_valid(key)) {
      throw EnvFileError(key_line,
                         fmt::format("line {}: invalid UTF-8 in a variable name", key_line));
    }
    if (!env_utf8_is_valid(value)) {
      throw EnvFileError(key_line, fmt::format("line {}: invalid UTF-8 in the value of {}",
                                               key_line, printable(key)));
    }
    pushed.push_back(EnvAssignment{std::move(key), std::move(value), key_line});
    key.clear();
    value.clear();
  };

  for (const char c : text) {
    switch (state) {
      case State::pre_key:
        if (in(kComments, c)) {
          state = State::comment;
        } else if (!in(kWhitespace, c)) {
          state = State::key;
          last_key_whitespace = kNone;
          key_line = line;
          key += c;
        }
        break;

      case State::key:
        if (in(kNewline, c)) {
          // Text without "=": dropped silently by systemd; said here, without its content.
          warnings.push_back(EnvFileWarning{key_line, "ignoring a line that is not NAME=VALUE"});
          state = State::pre_key;
          key.clear();
        } else if (c == '=') {
          state = State::pre_value;
          last_value_whitespace = kNone;
        } else {
          if (!in(kWhitespace, c)) {
            last_key_whitespace = kNone;
          } else if (last_key_whitespace == kNone) {
            last_key_whitespace = key.size();
          }
          key += c;
        }
        break;

      case State::pre_value:
        if (in(kNewline, c)) {
          state = State::pre_key;
          push();
        } else if (c == '\'') {
          state = State::single_quote_value;
        } else if (c == '"') {
          state = State::double_quote_value;
        } else if (c == '\\') {
          state = State::value_escape;
        } else if (!in(kWhitespace, c)) {
          state = State::value;
          value += c;
        }
        break;

      case State::value:
        if (in(kNewline, c)) {
          state = State::pre_key;
          // "Chomp off trailing whitespace from value"
          if (last_value_whitespace != kNone) value.resize(last_value_whitespace);
          push();
        } else if (c == '\\') {
          state = State::value_escape;
          last_value_whitespace = kNone;
        } else {
          if (!in(kWhitespace, c)) {
            last_value_whitespace = kNone;
          } else if (last_value_whitespace == kNone) {
            last_value_whitespace = value.size();
          }
          value += c;
        }
        break;

      case State::value_escape:
        state = State::value;
        // "Escaped newlines we eat up entirely"
        if (!in(kNewline, c)) value += c;
        break;

      case State::single_quote_value:
        if (c == '\'') {
          state = State::pre_value;
        } else {
          value += c;
        }
        break;

      case State::double_quote_value:
        if (c == '"') {
          state = State::pre_value;
        } else if (c == '\\') {
          state = State::double_quote_value_escape;
        } else {
          value += c;
        }
        break;

      case State::double_quote_value_escape:
        state = State::double_quote_value;
        if (in(kShellNeedEscape, c)) {
          value += c;
        } else if (c != '\n') {
          // "keep the \ in place, like the real shell does"
          value += '\\';
          value += c;
        }
        break;

      case State::comment:
        if (c == '\\') {
          state = State::comment_escape;
        } else if (in(kNewline, c)) {
          state = State::pre_key;
        }
        break;

      case State::comment_escape:
        // v252: the escaped character, a newline too, stays in the comment.
        state = State::comment;
        break;
    }
    if (c == '\n') ++line;
  }

  switch (state) {
    case State::value:
      if (last_value_whitespace != kNone) value.resize(last_value_whitespace);
      push();
      break;
    case State::single_quote_value:
    case State::double_quote_value:
    case State::double_quote_value_escape:
      // systemd takes everything up to the end as the value; a missing quote deserves a word.
      if (last_key_whitespace != kNone) key.resize(last_key_whitespace);
      warnings.push_back(EnvFileWarning{
          key_line, fmt::format("the quote opened in the value of {} is never closed: the value "
                                "runs to the end of the file",
                                printable(key))});
      push();
      break;
    case State::pre_value:
    case State::value_escape:
      push();
      break;
    case State::key:
      warnings.push_back(EnvFileWarning{key_line, "ignoring a line that is not NAME=VALUE"});
      break;
    case State::pre_key:
    case State::comment:
    case State::comment_escape:
      break;
  }

  return pushed;
}

EnvFileContents parse_env_text(std::string_view text) {
  EnvFileContents contents;
  Assignments assignments;
  for (EnvAssignment& assignment : scan_env_text(text, contents.warnings)) {
    assignments.push(std::move(assignment));
  }
  std::move(assignments).take_valid(contents);
  std::stable_sort(
      contents.warnings.begin(), contents.warnings.end(),
      [](const EnvFileWarning& a, const EnvFileWarning& b) { return a.line < b.line; });
  return contents;
}

}  // namespace pa
