#include "rotation_watcher.hpp"

#include "base/json_writer.hpp"
#include "base/log.hpp"
#include "base/time.hpp"
#include "keystore/errors.hpp"
#include "keystore/rotation.hpp"
#include "protocol/protocol.hpp"

namespace pa {
namespace {

constexpr auto kScanInterval = std::chrono::hours(1);
constexpr auto kReportInterval = std::chrono::hours(24);
constexpr auto kClockCheck = std::chrono::seconds(30);
// A wall clock that moved this much more (or less) than the monotonic one has jumped.
constexpr auto kJump = std::chrono::seconds(60);

// Wall-clock time minus monotonic time: constant while the clock runs freely.
std::chrono::seconds clock_offset() {
  return std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::system_clock::now().time_since_epoch() -
      std::chrono::steady_clock::now().time_since_epoch());
}

}  // namespace

RotationWatcher::RotationWatcher(const Config& config, Publish publish)
    : config_(config),
      publish_(std::move(publish)),
      clock_check_(test_override_seconds("PA_CLOCK_CHECK_SECONDS", kClockCheck)),
      thread_([this] { run(); }) {}

RotationWatcher::~RotationWatcher() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::size_t RotationWatcher::due() const {
  std::lock_guard lock(mutex_);
  return due_;
}

void RotationWatcher::run() {
  auto offset = clock_offset();
  auto next_scan = Clock::now();
  std::unique_lock lock(mutex_);
  while (!stop_) {
    const auto now_offset = clock_offset();
    const bool jumped = now_offset - offset > kJump || offset - now_offset > kJump;
    if (jumped) {
      log_info("the system clock jumped by {} s: key ages are computed again",
               (now_offset - offset).count());
      offset = now_offset;
      next_scan = Clock::now();
    }
    if (Clock::now() >= next_scan) {
      lock.unlock();
      scan();
      lock.lock();
      next_scan = Clock::now() + kScanInterval;
    }
    wake_.wait_for(lock, clock_check_, [this] { return stop_; });
  }
}

void RotationWatcher::scan() {
  const auto now = std::chrono::system_clock::now();
  std::vector<keystore::KeyAge> ages;
  try {
    ages = keystore::key_ages(config_.keys_dir, config_.key_max_age_seconds,
                              std::chrono::system_clock::to_time_t(now));
  } catch (const keystore::StoreError& error) {
    log_warning("cannot scan the key store for keys due for rotation: {}", error.what());
    return;
  }
  std::size_t due = 0;
  for (const keystore::KeyAge& age : ages) {
    if (!age.due) continue;
    ++due;
    const std::string key = age.folder.dir.string();
    {
      std::lock_guard lock(mutex_);
      const auto last = reported_.find(key);
      if (last != reported_.end() && Clock::now() - last->second < kReportInterval) continue;
      reported_[key] = Clock::now();
    }
    JsonObjectWriter json;
    json.field("device_id", age.folder.device)
        .optional_field("user_id", age.folder.user)
        .field("reason", age.due->reason)
        .field("age_s", age.due->age_s);
    if (age.due->not_after) json.field("not_after", format_rfc3339(*age.due->not_after));
    log_at(LogLevel::warning,
           LogFields{age.folder.device,
                     age.folder.user ? *age.folder.user : std::string_view(),
                     "rotation_due",
                     {},
                     "due",
                     {}},
           "{}'s key is due for rotation: {}", age.folder.device, age.due->reason);
    publish_(topics::rotation_due(config_.provision_topic_base, age.folder.device), json.str());
  }
  std::lock_guard lock(mutex_);
  due_ = due;
}

}  // namespace pa
