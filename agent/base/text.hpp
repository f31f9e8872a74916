#pragma once
// Text from the wire made safe to show: one line (control characters escaped) and valid UTF-8
// (invalid bytes replaced), for log lines, error messages and the JSON the agent publishes.
#include <string>
#include <string_view>

namespace pa {

// Control characters escaped (\n, \r, \t, \xNN), so a message stays one line.
std::string escape_controls(std::string_view text);

// `text` in double quotes with " and \ escaped and control characters escaped, for the one-line
// configuration errors: invalid NAME="value": why.
std::string quoted(std::string_view text);

// `text` with every byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF) replaced by U+FFFD.
std::string valid_utf8(std::string_view text);

// True when `text` is well-formed UTF-8 by the same rules.
bool is_valid_utf8(std::string_view text);

}  // namespace pa
