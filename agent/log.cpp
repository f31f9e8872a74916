#include "log.hpp"

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

void write_journal(LogLevel level, const LogFields& fields, std::string_view message) {
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
  std::vector<iovec> iov;
  iov.reserve(items.size());
  for (auto& item : items) iov.push_back({item.data(), item.size()});
  sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
}

void write_stderr(LogLevel level, const LogFields& fields, std::string_view message) {
  char stamp[32] = "";
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  std::string line = fmt::format("{} {}: {}", stamp, level_name(level), message);
  auto add = [&](const char* name, std::string_view value) {
    if (!value.empty()) line += fmt::format(" {}={}", name, value);
  };
  add("device", fields.device);
  add("user", fields.user);
  add("action", fields.action);
  add("request_id", fields.request_id);
  add("outcome", fields.outcome);
  add("error", fields.error_code);
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
  if (g_journal)
    write_journal(level, fields, message);
  else
    write_stderr(level, fields, message);
}

}  // namespace pa
