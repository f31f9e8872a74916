#pragma once
// Logging (SPEC section 8): under journald (JOURNAL_STREAM names our stderr) native entries with
// PRIORITY and the fields DEVICE_ID, USER_ID, ACTION, REQUEST_ID, OUTCOME, ERROR_CODE and
// TRACEPARENT (an MQTT 5 request's W3C trace context, SPEC 3.6); elsewhere
// one readable line per event on stderr. Never pass secrets or private keys in here.
#include <fmt/format.h>

#include <array>
#include <string>
#include <string_view>

#include "base/enum_names.hpp"

namespace pa {

enum class LogLevel { debug, info, warning, error };
// LOG_LEVEL's words; "warn" is read as warning.
inline constexpr std::array<EnumName<LogLevel>, 5> kLogLevelNames{{{LogLevel::debug, "debug"},
                                                                   {LogLevel::info, "info"},
                                                                   {LogLevel::warning, "warning"},
                                                                   {LogLevel::error, "error"},
                                                                   {LogLevel::warning, "warn"}}};

// Structured fields of one event; empty fields are left out.
struct LogFields {
  std::string_view device;
  std::string_view user;
  std::string_view action;
  std::string_view request_id;
  std::string_view outcome;           // "ok", "error", "ignored", ...
  std::string_view error_code;        // SPEC section 3.3 code when outcome is "error"
  std::string_view traceparent = {};  // W3C trace context of the request (MQTT 5 user property)
};

// Sets the threshold and picks journald or stderr once at start-up. Logging is process-wide
// because plugins log through a C callback that carries no logger.
void log_init(LogLevel level);
bool log_enabled(LogLevel level) noexcept;
// Writes one entry. A PEM private key block and every string given to log_redact() are
// replaced in the message and the fields before they go anywhere: the last guard should a secret
// slip in.
void log_write(LogLevel level, const LogFields& fields, std::string_view message);

// Registers a secret (the broker password) that must never appear in a log entry.
void log_redact(std::string secret);

// The most recent entry at error level or with outcome "error", for systemd's STATUS= line;
// empty when there was none.
std::string log_last_error();

template <typename... Args>
void log_at(LogLevel level, const LogFields& fields, fmt::format_string<Args...> format,
            Args&&... args) {
  if (log_enabled(level))
    log_write(level, fields, fmt::format(format, std::forward<Args>(args)...));
}
template <typename... Args>
void log_debug(fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::debug, {}, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_info(fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::info, {}, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_warning(fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::warning, {}, format, std::forward<Args>(args)...);
}
template <typename... Args>
void log_error(fmt::format_string<Args...> format, Args&&... args) {
  log_at(LogLevel::error, {}, format, std::forward<Args>(args)...);
}

}  // namespace pa
