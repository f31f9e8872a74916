#pragma once
// Keys due for rotation (SPEC section 5), watched while the agent runs: the store is scanned on
// start, every hour and whenever the system clock jumps (a Pi without a real-time clock boots at
// the wrong time until it syncs, so ages computed before are wrong); each due device is reported
// on P/status/D/rotation_due at most once a day, and logged. Runs on its own thread so a large
// store never delays the event loop.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "config/config.hpp"

namespace pa {

class RotationWatcher {
 public:
  // Publishes a report: topic, payload (QoS 1, not retained).
  using Publish = std::function<void(const std::string& topic, const std::string& payload)>;

  RotationWatcher(const Config& config, Publish publish);
  RotationWatcher(const RotationWatcher&) = delete;
  RotationWatcher& operator=(const RotationWatcher&) = delete;
  ~RotationWatcher();  // stops the thread

  // Devices due at the last scan (for the status and the metrics).
  std::size_t due() const;

 private:
  void run();
  void scan();

  using Clock = std::chrono::steady_clock;
  const Config& config_;
  Publish publish_;
  const Clock::duration clock_check_;  // how often the wall clock is compared with the monotonic
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::size_t due_ = 0;
  std::map<std::string, Clock::time_point> reported_;  // device folder -> last report
  std::thread thread_;
};

}  // namespace pa
