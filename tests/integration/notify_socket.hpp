// What systemd listens on for sd_notify() (SPEC section 8), for tests that read the agent's
// READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 from a real notify socket.
#pragma once

#include <sys/poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "test_support.hpp"

namespace pa::test {

// One datagram from the agent, e.g. "READY=1\nSTATUS=...", and when it arrived.
struct Notification {
  std::string text;
  std::chrono::steady_clock::time_point at;
};

// The value of `name` in a notification ("" when absent): STATUS, READY, WATCHDOG, STOPPING.
inline std::string notify_field(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(name + "=", 0) == 0) return line.substr(name.size() + 1);
  return {};
}

// What systemd listens on for sd_notify(): an AF_UNIX datagram socket, here in a temporary folder.
class NotifySocket {
 public:
  using Predicate = std::function<bool(const Notification&)>;

  NotifySocket() : path_(dir_.file("notify")) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path_.size() >= sizeof address.sun_path) throw std::runtime_error("socket path too long");
    std::memcpy(address.sun_path, path_.c_str(), path_.size() + 1);
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
      throw std::runtime_error(fmt::format("bind {}: {}", path_, std::strerror(errno)));
  }
  ~NotifySocket() { ::close(fd_); }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  const std::string& path() const { return path_; }

  // The first notification (received earlier or within `timeout`) that satisfies `predicate`.
  std::optional<Notification> wait_for(const Predicate& predicate,
                                       std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t checked = 0;
    for (;;) {
      for (; checked < received_.size(); ++checked)
        if (predicate(received_[checked])) return received_[checked];
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      receive(left);
    }
  }

  // Everything that arrives within `duration`, added to received().
  void collect(std::chrono::milliseconds duration) {
    const auto deadline = std::chrono::steady_clock::now() + duration;
    for (auto left = duration; left.count() > 0;
         left = std::chrono::duration_cast<std::chrono::milliseconds>(
             deadline - std::chrono::steady_clock::now()))
      receive(left);
  }

  const std::vector<Notification>& received() const { return received_; }
  std::string transcript() const {
    std::string text;
    for (const auto& notification : received_) text += "[" + notification.text + "]\n";
    return text;
  }

 private:
  // Waits up to `timeout` for datagrams and records what is there.
  void receive(std::chrono::milliseconds timeout) {
    pollfd descriptor{fd_, POLLIN, 0};
    if (::poll(&descriptor, 1, static_cast<int>(timeout.count())) <= 0) return;
    char buffer[4096];
    for (;;) {
      const ssize_t size = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
      if (size < 0) return;
      received_.push_back(
          {std::string(buffer, static_cast<std::size_t>(size)), std::chrono::steady_clock::now()});
    }
  }

  TempDir dir_;
  std::string path_;
  int fd_ = -1;
  std::vector<Notification> received_;
};

inline bool is_ready(const Notification& n) {
  return notify_field(n.text, "READY") == "1";
}
inline bool is_watchdog(const Notification& n) {
  return notify_field(n.text, "WATCHDOG") == "1";
}
inline bool is_stopping(const Notification& n) {
  return notify_field(n.text, "STOPPING") == "1";
}
inline NotifySocket::Predicate status_has(const std::string& part) {
  return [part](const Notification& n) {
    return notify_field(n.text, "STATUS").find(part) != std::string::npos;
  };
}

}  // namespace pa::test
