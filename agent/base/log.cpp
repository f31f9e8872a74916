#include "base/log.hpp"

#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <vector>

#include "base/text.hpp"
#include "base/time.hpp"

namespace pa {
namespace {

std::atomic<int> g_threshold{static_cast<int>(LogLevel::info)};
std::atomic<bool> g_journal{false};
std::mutex g_stderr_mutex;  // one line per event, never interleaved
std::mutex g_state_mutex;   // guards the two below
std::vector<std::string> g_secrets;
std::string g_last_error;

constexpr const char* kRedacted = "********";
constexpr std::size_t kLastErrorMax = 200;  // STATUS= is one short line

std::string_view level_name(LogLevel level) {
  return enum_name(kLogLevelNames, level, "info");
}

int syslog_priority(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return 7;
    case LogLevel::info:
      return 6;
    case LogLevel::warning:
      return 4;
    case LogLevel::error:
      return 3;
  }
  return 6;
}

// systemd sets JOURNAL_STREAM=<dev>:<ino> when stderr is connected to the journal.
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

// Every PEM private key block (PKCS#8, RSA, EC, encrypted) and every registered secret masked.
std::string redact(std::string_view message) {
  std::string out(message);
  constexpr std::string_view kMarker = "PRIVATE KEY-----";
  for (std::size_t at = out.find(kMarker); at != std::string::npos; at = out.find(kMarker)) {
    std::size_t begin = out.rfind("-----BEGIN", at);
    if (begin == std::string::npos) begin = at;
    std::size_t end = out.size();
    const std::size_t footer = out.find("-----END", at + kMarker.size());
    if (footer != std::string::npos) {
      const std::size_t close = out.find(kMarker, footer);
      if (close != std::string::npos) end = close + kMarker.size();
    }
    out.replace(begin, end - begin, "[private key redacted]");
  }
  // One pass over the text, the longest secret first where several start at one place, so a
  // mask is never searched again (a password of stars would otherwise grow it or never end).
  std::lock_guard<std::mutex> lock(g_state_mutex);
  if (g_secrets.empty()) return out;
  std::string masked;
  masked.reserve(out.size());
  for (std::size_t at = 0; at < out.size();) {
    std::size_t longest = 0;
    for (const std::string& secret : g_secrets)
      if (secret.size() > longest && out.compare(at, secret.size(), secret) == 0)
        longest = secret.size();
    if (longest > 0) {
      masked += kRedacted;
      at += longest;
    } else {
      masked += out[at++];
    }
  }
  out = std::move(masked);
  return out;
}

void remember_error(LogLevel level, const LogFields& fields, std::string_view message) {
  if (level != LogLevel::error && fields.outcome != "error") return;
  std::string text = fields.error_code.empty()
                         ? escape_controls(message)
                         : fmt::format("{} for {}: {}", fields.error_code, fields.device,
                                       escape_controls(message));
  if (text.size() > kLastErrorMax) text = text.substr(0, kLastErrorMax - 3) + "...";
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_last_error = std::move(text);
}

// false when journald did not take the entry (it is restarting, say).
bool write_journal(LogLevel level, const LogFields& fields, std::string_view message) {
  std::vector<std::string> items;
  items.push_back(fmt::format("MESSAGE={}", message));
  items.push_back(fmt::format("PRIORITY={}", syslog_priority(level)));
  items.push_back("SYSLOG_IDENTIFIER=provision-agent");
  auto add = [&](const char* name, std::string_view value) {
    if (!value.empty()) items.push_back(fmt::format("{}={}", name, value));
  };
  add("DEVICE_ID", fields.device);
  add("USER_ID", fields.user);
  add("ACTION", fields.action);
  add("REQUEST_ID", fields.request_id);
  add("OUTCOME", fields.outcome);
  add("ERROR_CODE", fields.error_code);
  add("TRACEPARENT", fields.traceparent);
  std::vector<iovec> iov;
  iov.reserve(items.size());
  for (auto& item : items) iov.push_back({item.data(), item.size()});
  return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
}

void write_stderr(LogLevel level, const LogFields& fields, std::string_view message) {
  const std::string stamp = format_rfc3339(static_cast<std::int64_t>(std::time(nullptr)));
  std::string line = fmt::format("{} {}: {}", stamp, level_name(level), escape_controls(message));
  auto add = [&](const char* name, std::string_view value) {
    if (!value.empty()) line += fmt::format(" {}={}", name, escape_controls(value));
  };
  add("device", fields.device);
  add("user", fields.user);
  add("action", fields.action);
  add("request_id", fields.request_id);
  add("outcome", fields.outcome);
  add("error", fields.error_code);
  add("traceparent", fields.traceparent);
  line += '\n';
  std::lock_guard<std::mutex> lock(g_stderr_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

void log_init(LogLevel level) {
  g_threshold = static_cast<int>(level);
  g_journal = stderr_is_journal();
}

bool log_enabled(LogLevel level) noexcept {
  return static_cast<int>(level) >= g_threshold.load();
}

void log_write(LogLevel level, const LogFields& given, std::string_view message) {
  if (!log_enabled(level)) return;
  const std::string safe = redact(message);
  // The fields too: a request id or user id from the wire may hold anything.
  const std::string device = redact(given.device), user = redact(given.user),
                    action = redact(given.action), request_id = redact(given.request_id),
                    outcome = redact(given.outcome), error_code = redact(given.error_code),
                    traceparent = redact(given.traceparent);
  const LogFields fields{device, user, action, request_id, outcome, error_code, traceparent};
  remember_error(level, fields, safe);
  // Under journald, an entry it refuses still goes to stderr, which systemd also collects.
  if (!g_journal || !write_journal(level, fields, safe)) write_stderr(level, fields, safe);
}

void log_redact(std::string secret) {
  if (secret.empty()) return;
  std::lock_guard<std::mutex> lock(g_state_mutex);
  g_secrets.push_back(std::move(secret));
}

std::string log_last_error() {
  std::lock_guard<std::mutex> lock(g_state_mutex);
  return g_last_error;
}

}  // namespace pa
