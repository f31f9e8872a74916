#pragma once
// The configuration table (SPEC section 2): every variable written once, with its flag, kind,
// default, range or choices, help and section (fluent-bit's config_map is the model). Parsing and
// validation (config.cpp), `provision-agent config`, --help, systemd/agent.env, the README's
// configuration table, the manual and the shell completion all read it.
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "base/enum_names.hpp"

namespace pa {

struct Config;

// What a variable's text means; its parsing and its error line follow from it.
enum class VariableKind {
  text,      // any text (a row's check may say more)
  path,      // a file or folder (a row's PathCheck may say more)
  integer,   // a decimal integer within [min, max]
  boolean,   // true/false, 1/0, yes/no, on/off
  choice,    // one of the row's choices
  duration,  // an integer with s, m, h or d: "365d"
  url_list,  // comma-separated mqtt:// or mqtts:// URLs
  list,      // comma-separated items (blanks around them dropped)
};
inline constexpr std::array<EnumName<VariableKind>, 8> kVariableKindNames{{
    {VariableKind::text, "text"},
    {VariableKind::path, "path"},
    {VariableKind::integer, "integer"},
    {VariableKind::boolean, "boolean"},
    {VariableKind::choice, "choice"},
    {VariableKind::duration, "duration"},
    {VariableKind::url_list, "URL list"},
    {VariableKind::list, "list"},
}};
std::string_view to_string(VariableKind kind) noexcept;

// Where a variable is listed: agent.env's and the manual's sections, in this order.
enum class ConfigSection { broker, key_store, requests, logging };
// The sections' titles.
inline constexpr std::array<EnumName<ConfigSection>, 4> kConfigSectionNames{{
    {ConfigSection::broker, "Broker"},
    {ConfigSection::key_store, "Key store and plugins"},
    {ConfigSection::requests, "Requests"},
    {ConfigSection::logging, "Logging and metrics"},
}};
std::string_view to_string(ConfigSection section) noexcept;
inline constexpr ConfigSection kConfigSections[] = {ConfigSection::broker, ConfigSection::key_store,
                                                    ConfigSection::requests,
                                                    ConfigSection::logging};

// What a path must be at start-up.
enum class PathCheck {
  none,
  readable_file,  // a file this process can read
  folder_exists,  // a file to be written whose folder exists
};

// A variable's value once typed: text and paths as text, integers, durations (seconds) and choices
// (the enum's value) as numbers, lists as their items.
using ConfigValue = std::variant<std::string, std::int64_t, bool, std::vector<std::string>>;

struct ConfigVariable {
  const char* env = "";   // "MQTT_HOST"
  const char* flag = "";  // "--mqtt-host"
  VariableKind kind = VariableKind::text;
  ConfigSection section = ConfigSection::broker;
  // The built-in default as the variable would spell it ("60"); empty: unset.
  std::string default_value;
  // A default that depends on the machine or on other variables, in words for the
  // documentation ("the number of CPUs"); compute_default gives its value at start-up.
  const char* default_note = nullptr;
  std::function<std::string(const Config&)> compute_default;
  std::int64_t min = 0;  // integer, duration (seconds)
  std::int64_t max = 0;
  const char* unit = nullptr;  // "seconds", "bytes": said after the range
  // choice: every accepted spelling with its enum value; the first per value is the one shown.
  std::vector<std::pair<std::int64_t, std::string_view>> choices;
  PathCheck path_check = PathCheck::none;
  // A rule beyond the kind: the reason the text is refused, or nullopt. Runs on a non-empty
  // value of an optional variable, and on every value of the others.
  std::optional<std::string> (*check)(std::string_view text) = nullptr;
  // Replaces expectation()'s wording ("expected comma-separated device id patterns (pH*,ec01)").
  const char* expected = nullptr;
  const char* help = "";  // one line: --help, `config`, the README
  const char* note = "";  // more, for agent.env and the manual
  bool secret = false;    // masked by `config`, never returned to plugins
  // What the package's agent.env sets (uncommented), when it sets the variable.
  const char* package_value = nullptr;
  // Stores the typed value in its Config field; empty when load_config resolves the variable
  // itself (the broker URL, the key store root, the password file).
  std::function<void(Config&, const ConfigValue&)> assign;
  // An empty value means "unset" (the field is a std::optional).
  bool optional = false;

  // The shown names of the choices, in table order.
  std::vector<std::string_view> choice_names() const;
  // The default in words for the documentation: "60", "1883, or 8883 with TLS", "unset".
  std::string default_text() const;
  // What the value may be: "5..65535 seconds", "3.1.1 or 5", "true or false"; empty for text.
  std::string range_text() const;
  // The one-line reason an invalid value is refused: "expected an integer 5..65535 (seconds)".
  std::string expectation() const;
};

// Every variable of SPEC section 2, in documentation order.
const std::vector<ConfigVariable>& config_variables();
// The row of `env`, or nullptr.
const ConfigVariable* find_config_variable(std::string_view env);

// "a, b or c".
std::string join_alternatives(const std::vector<std::string_view>& words);

}  // namespace pa
