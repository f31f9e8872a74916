#pragma once
// The syntax of systemd's EnvironmentFile= (SPEC section 2), ported from systemd v252 (Debian 12):
// parse_env_file_internal() in src/basic/env-file.c, as load_env_file() and the service manager's
// exec_context_load_environment() (src/core/execute.c) use it. The service reads
// /etc/provision-agent/agent.env through systemd and `config --env-file` reads it through this
// code, so both must see the same values:
//
// - Leading whitespace is skipped; a line whose first other character is `#` or `;` is a comment.
//   A comment ending in a backslash swallows the next line too (v252; v254 changed that).
// - KEY=VALUE. Whitespace around the key and the value is dropped; text without `=` is dropped.
// - Outside quotes, a backslash escapes the next character and backslash-newline joins lines.
// - 'single quotes' take everything literally, newlines included.
// - "double quotes": a backslash before one of " \ ` $ is removed; before a newline both vanish
//   (continuation); before anything else it stays, as in the shell.
// - Quoted and unquoted parts concatenate (`A="x" y` is "xy"); quotes mid-value are literal.
// - `\r` ends a line like `\n` (so CRLF files work); no `export` prefix (`export A=1` is the
//   invalid name "export A", ignored like every invalid name).
// - A later assignment of a name replaces an earlier one.
// - An assignment whose name is not [A-Za-z_][A-Za-z0-9_]* is ignored with a log line.
// - A NUL byte anywhere, or invalid UTF-8 in an assignment, makes systemd refuse the whole file.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace pa {

// What makes systemd refuse the whole file. `line` is 1-based.
struct EnvFileError : std::runtime_error {
  EnvFileError(std::size_t line, const std::string& what) : std::runtime_error(what), line(line) {}
  std::size_t line;
};

struct EnvAssignment {
  std::string name;
  std::string value;
  std::size_t line = 0;  // where the assignment that set the value starts, 1-based
};

// An assignment or line that systemd drops; `message` names the line's problem and never holds a
// value (values may be secrets).
struct EnvFileWarning {
  std::size_t line = 0;
  std::string message;
};

struct EnvFileContents {
  std::vector<EnvAssignment> assignments;  // in order of a name's first assignment
  std::vector<EnvFileWarning> warnings;    // for the caller to log, in file order
};

// Parses the whole text of an environment file as EnvironmentFile= does. Throws EnvFileError
// where systemd would refuse the file.
EnvFileContents parse_env_text(std::string_view text);

// The first half of parse_env_text(): every assignment in file order as systemd's state machine
// hands it on (parse_env_file_internal() calling its push function), repeats not yet collapsed
// and names not yet checked. Lines it drops are added to `warnings`. Throws as parse_env_text().
// systemd's other readers (environment.d, os-release) differ only after this step.
std::vector<EnvAssignment> scan_env_text(std::string_view text,
                                         std::vector<EnvFileWarning>& warnings);

// True for a name systemd accepts: letters, digits and `_`, not starting with a digit.
bool env_name_is_valid(std::string_view name);

// systemd's UTF-8 check (utf8_is_valid()): well-formed and shortest-form, no surrogates, nothing
// past U+10FFFF, and no noncharacters (U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF).
bool env_utf8_is_valid(std::string_view text);

}  // namespace pa
