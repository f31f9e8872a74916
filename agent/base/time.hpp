#pragma once
// Time as the agent reads and writes it, one home: RFC 3339 both ways, and whether the system
// clock can be right at all (a Pi without a real-time clock boots in 1970).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pa {

// RFC 3339 ("2026-11-23T10:00:00Z", offsets and fractions allowed; without an offset the time
// is UTC, as the original server's utcnow().isoformat() means it) -> Unix microseconds.
std::optional<std::int64_t> parse_rfc3339_us(std::string_view text);
// The same in Unix seconds, rounded down.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

// Unix seconds -> "2026-11-23T10:00:00Z".
std::string format_rfc3339(std::int64_t unix_seconds);

// Why the system clock cannot be right at `now` (before 2024, or before the day this agent was
// built), nullopt when it is plausible.
std::optional<std::string> clock_problem(std::chrono::system_clock::time_point now);

}  // namespace pa
