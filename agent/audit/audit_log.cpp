#include "audit/audit_log.hpp"

#include <fcntl.h>
#include <rapidjson/document.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <string_view>
#include <system_error>

#include "base/log.hpp"
#include "base/time.hpp"

namespace pa::audit {
namespace {

namespace fs = std::filesystem;

// A minute between attempts when a checkpoint could not be published.
constexpr std::chrono::seconds kCheckpointRetry{60};

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// The seq and stated hash of one line; nullopt when it is not an entry.
std::optional<Head> parse_head(std::string_view line) {
  const auto hashed = split_hashed_line(line);
  if (!hashed) return std::nullopt;
  rapidjson::Document doc;
  doc.Parse(hashed->body.data(), hashed->body.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  const auto seq = doc.FindMember("seq");
  if (seq == doc.MemberEnd() || !seq->value.IsUint64() || seq->value.GetUint64() == 0)
    return std::nullopt;
  return Head{seq->value.GetUint64(), hashed->stated_hash};
}

// The last entry among the complete lines of `content`. Lines after it that are not entries are
// counted in `skipped` (damage that `audit verify` reports; the chain goes on from the entry).
std::optional<Head> last_entry(std::string_view content, std::size_t& skipped) {
  std::size_t end = content.size();  // one past the current line's last character
  if (end > 0 && content[end - 1] == '\n') --end;
  while (true) {
    const std::size_t newline = end == 0 ? std::string_view::npos : content.rfind('\n', end - 1);
    const std::size_t from = newline == std::string_view::npos ? 0 : newline + 1;
    if (from < end || from > 0) {
      if (auto head = parse_head(content.substr(from, end - from))) return head;
      ++skipped;
    }
    if (from == 0) return std::nullopt;
    end = from - 1;  // the line before ends at this line's preceding "\n"
  }
}

// The whole file, or nullopt when it does not exist. Throws std::system_error.
std::optional<std::string> read_if_present(const fs::path& path) {
  keystore::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("cannot open " + path.string());
  }
  return keystore::read_fd(fd.get(), path);
}

void write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot write " + path.string());
    }
    data.remove_prefix(static_cast<std::size_t>(written));
  }
}

LogFields fields_of(const Record& record) {
  return LogFields{record.device_id ? std::string_view(*record.device_id) : std::string_view(),
                   record.user_id ? std::string_view(*record.user_id) : std::string_view(),
                   record.action,
                   record.request_id ? std::string_view(*record.request_id) : std::string_view(),
                   record.ok ? "ok" : "error",
                   {}};
}

}  // namespace

AuditLog::AuditLog(fs::path folder, LogOptions options)
    : folder_(std::move(folder)), options_(options) {
  const std::lock_guard<std::mutex> lock(mutex_);
  open_locked();
}

AuditLog::~AuditLog() = default;

bool AuditLog::open_locked() {
  const fs::path path = folder_ / kAuditFile;
  try {
    fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd_) throw_errno("cannot open " + path.string());
    const std::string content = keystore::read_fd(fd_.get(), path);
    // A last line without its "\n" is an append a crash interrupted.
    const std::size_t last_newline = content.rfind('\n');
    const std::size_t complete = last_newline == std::string::npos ? 0 : last_newline + 1;
    const std::uint64_t torn = content.size() - complete;
    if (torn > 0) {
      if (::ftruncate(fd_.get(), static_cast<off_t>(complete)) != 0 || ::fdatasync(fd_.get()) != 0)
        throw_errno("cannot cut the torn last entry of " + path.string());
    }
    size_ = complete;
    keystore::fsync_dir(folder_);  // the file may be new

    std::size_t skipped = 0;
    std::optional<Head> found = last_entry(std::string_view(content).substr(0, complete), skipped);
    for (int generation = 1; !found && generation <= options_.generations; ++generation) {
      const auto older = read_if_present(folder_ / generation_file(generation));
      if (older) found = last_entry(*older, skipped);
    }
    if (skipped > 0)
      log_error(
          "the audit log in {} ends in {} line(s) that are not entries; the chain goes on from "
          "the last entry (provision-agent audit verify shows the damage)",
          folder_.string(), skipped);
    head_ = found.value_or(Head{});
    ready_ = true;
    if (torn > 0) {
      log_warning(
          "{} ended in a torn entry ({} bytes, an append cut short by a crash): cut it off and "
          "sealed it as seq {}",
          path.string(), torn, head_.seq + 1);
      Entry seal;
      seal.action = "seal";
      seal.cut_bytes = torn;
      seal.cut_seq = head_.seq + 1;
      if (!append_locked(std::move(seal))) return false;
    }
    return true;
  } catch (const std::exception& error) {
    log_error("audit log: {}; key operations are not recorded until it works again", error.what());
    fd_.reset();
    ready_ = false;
    return false;
  }
}

void AuditLog::rotate_locked() {
  // Oldest first, so a crash in between leaves every entry in exactly one file, in order.
  fd_.reset();
  for (int generation = options_.generations - 1; generation >= 0; --generation) {
    const fs::path from = folder_ / generation_file(generation);
    const fs::path to = folder_ / generation_file(generation + 1);
    if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT)
      throw_errno("cannot rename " + from.string() + " to " + to.string());
  }
  const fs::path path = folder_ / kAuditFile;
  fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd_) throw_errno("cannot create " + path.string());
  size_ = 0;
  keystore::fsync_dir(folder_);
}

std::optional<Head> AuditLog::append_locked(Entry entry) {
  const fs::path path = folder_ / kAuditFile;
  try {
    if (size_ >= options_.max_file_bytes) rotate_locked();
  } catch (const std::exception& error) {
    // Reopened and rechecked by the next record(); this entry goes nowhere.
    ready_ = false;
    fd_.reset();
    log_error("audit log: cannot rotate {}: {}", path.string(), error.what());
    return std::nullopt;
  }
  entry.seq = head_.seq + 1;
  entry.prev = head_.hash;
  entry.ts = format_rfc3339(static_cast<std::int64_t>(std::time(nullptr)));
  std::string hash;
  const std::string line = entry_line(entry, &hash);
  try {
    write_all(fd_.get(), line, path);
  } catch (const std::exception& error) {
    // Take back a partial line; if even that fails, reopening seals it as a tear.
    if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) ready_ = false;
    log_error("audit log: {}", error.what());
    return std::nullopt;
  }
  size_ += line.size();
  head_ = Head{entry.seq, hash};
  if (::fdatasync(fd_.get()) != 0)
    log_error("audit log: cannot sync {}: {} (entry seq {} may not survive a power loss)",
              path.string(), std::generic_category().message(errno), entry.seq);
  return head_;
}

void AuditLog::record(const Record& record) noexcept {
  try {
    std::optional<Head> written;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (ready_ || open_locked()) {
        Entry entry;
        entry.action = record.action;
        entry.device_id = record.device_id;
        entry.user_id = record.user_id;
        entry.request_id = record.request_id;
        entry.fingerprint = record.fingerprint;
        entry.previous_fingerprint = record.previous_fingerprint;
        entry.ok = record.ok;
        written = append_locked(std::move(entry));
      }
    }
    if (!written) {
      log_at(LogLevel::error, fields_of(record), "audit log: {} not recorded", record.action);
      return;
    }
    if (options_.checkpoint_every > 0 && written->seq % options_.checkpoint_every == 0) {
      const std::lock_guard<std::mutex> lock(checkpoint_mutex_);
      publish_checkpoint_locked(*written, std::chrono::steady_clock::now(), false);
    }
  } catch (const std::exception& error) {
    log_error("audit log: {}", error.what());
  }
}

Head AuditLog::head() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return head_;
}

void AuditLog::set_checkpoint_sink(CheckpointSink sink) {
  const std::lock_guard<std::mutex> lock(checkpoint_mutex_);
  sink_ = std::move(sink);
}

void AuditLog::tick(std::chrono::steady_clock::time_point now) noexcept {
  try {
    // The event loop never waits here for a worker that is signing a checkpoint.
    std::unique_lock<std::mutex> lock(checkpoint_mutex_, std::try_to_lock);
    if (!lock || !sink_ || now < next_checkpoint_) return;
    const Head current = head();
    if (current.seq == 0) return;
    publish_checkpoint_locked(current, now, true);
  } catch (const std::exception& error) {
    log_error("audit log: {}", error.what());
  }
}

void AuditLog::publish_checkpoint_locked(const Head& head,
                                         std::chrono::steady_clock::time_point now, bool repeat) {
  // Workers and the event loop may race; the retained checkpoint never goes back in the chain.
  if (head.seq < published_seq_ || (!repeat && head.seq == published_seq_)) return;
  if (!sink_) return;
  if (sink_(head)) {
    published_seq_ = head.seq;
    next_checkpoint_ = now + options_.checkpoint_interval;
  } else {
    next_checkpoint_ = now + kCheckpointRetry;
  }
}

}  // namespace pa::audit
