#pragma once
// Strict JSON for everything that arrives from the broker (SPEC section 3.1): valid UTF-8, unique
// member names (the agent and its plugins must never read different values of one field), at most
// kMaxJsonDepth levels of objects and arrays with the top level being 1, and a parser that never
// recurses on the stack (RapidJSON's iterative mode).
#include <rapidjson/document.h>

#include <string>
#include <string_view>

namespace pa {

inline constexpr unsigned kMaxJsonDepth = 32;

enum class JsonFault { none, syntax, depth, duplicate_name };

struct JsonCheck {
  JsonFault fault = JsonFault::none;
  std::string message;  // what is wrong, for the response; empty when fault is none
};

// Parses `text` into `doc` when it passes every rule; otherwise leaves `doc` empty (null).
JsonCheck parse_json_strictly(std::string_view text, rapidjson::Document& doc);

}  // namespace pa
