#include "base/log.hpp"

#include <sys/stat.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <vector>

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

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
  }
  return "info";
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
  std::lock_guard<std::mutex> lock(g_state_mutex);
  for (const std::string& secret : g_secrets)
    for (std::size_t at = out.find(secret); at != std::string::npos; at = out.find(secret, at))
      out.replace(at, secret.size(), kRedacted);
  return out;
}

// Control characters escaped, so a message or a request_id from the wire stays on one line.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (byte < 0x20 || byte == 0x7f)
      out += fmt::format("\\x{:02x}", byte);
    else
      out += c;
  }
  return out;
}

void remember_error(LogLevel level, const LogFields& fields, std::string_view message) {
  if (level != LogLevel::error && fields.outcome != "error") return;
  std::string text = fields.error_code.empty() ? one_line(message)
                                               : fmt::format("{} for {}: {}", fields.error_code,
                                                             fields.device, one_line(message));
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
  char stamp[32] = "";
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  std::string line = fmt::format("{} {}: {}", stamp, level_name(level), one_line(message));
  auto add = [&](const char* name, std::string_view value) {
    if (!value.empty()) line += fmt::format(" {}={}", name, one_line(value));
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

void log_write(LogLevel level, const LogFields& fields, std::string_view message) {
  if (!log_enabled(level)) return;
  const std::string safe = redact(message);
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
