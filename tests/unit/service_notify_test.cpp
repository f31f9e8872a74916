// systemd notification (SPEC section 8) as systemd receives it: datagrams on a real unix socket
// named by NOTIFY_SOCKET, with READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 when they are due.
#include "service_notify.hpp"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "keystore/file_util.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

// Sets or unsets an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// What systemd listens on: a datagram socket bound in a temporary folder.
class NotifySocket {
 public:
  NotifySocket() : path_(dir_.file("notify")) {
    fd_ = keystore::UniqueFd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path_.c_str(), sizeof address.sun_path - 1);
    if (!fd_ || ::bind(fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
      throw std::runtime_error("cannot bind " + path_);
  }
  const std::string& path() const { return path_; }

  // The next datagram, or nullopt when none came within a few seconds.
  std::optional<std::string> next() {
    pollfd poll_fd{fd_.get(), POLLIN, 0};
    if (::poll(&poll_fd, 1, 5000) != 1) return std::nullopt;
    char buffer[4096];
    const ssize_t size = ::recv(fd_.get(), buffer, sizeof buffer, 0);
    if (size < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(size));
  }
  // Whether a datagram is waiting (everything sent was sent before this returns).
  bool pending() {
    pollfd poll_fd{fd_.get(), POLLIN, 0};
    return ::poll(&poll_fd, 1, 0) == 1;
  }

 private:
  test::TempDir dir_;
  std::string path_;
  keystore::UniqueFd fd_;
};

ServiceState state(bool connected, std::string broker, std::size_t served = 0,
                   std::string error = {}) {
  return ServiceState{connected, std::move(broker), served, std::move(error)};
}

class ServiceNotifyTest : public ::testing::Test {
 protected:
  NotifySocket socket_;
  ScopedEnv notify_{"NOTIFY_SOCKET", socket_.path().c_str()};
  ScopedEnv watchdog_{"WATCHDOG_USEC", nullptr};
  ScopedEnv fallback_{"PA_READY_FALLBACK_SECONDS", nullptr};
};

TEST_F(ServiceNotifyTest, ReadyOnceSubscribedThenStatusOnChanges) {
  ServiceNotifier notifier;
  ASSERT_TRUE(notifier.active());
  // Before the subscription: what it is doing, but not ready.
  notifier.tick(state(false, "connecting to broker b:1883"));
  EXPECT_EQ(socket_.next(),
            "STATUS=still trying to reach the broker: connecting to broker b:1883; 0 request(s) "
            "served");
  notifier.subscribed(state(true, "connected to broker b:1883 as pi"));
  EXPECT_EQ(socket_.next(),
            "READY=1\nSTATUS=connected to broker b:1883 as pi; 0 request(s) served");
  notifier.tick(state(true, "connected to broker b:1883 as pi"));
  EXPECT_FALSE(socket_.pending());  // nothing changed
  notifier.tick(state(false, "broker b:1883 unreachable", 0, "storage_failed for pH01: full"));
  EXPECT_EQ(socket_.next(),
            "STATUS=still trying to reach the broker: broker b:1883 unreachable; 0 request(s) "
            "served; last error: storage_failed for pH01: full");
  notifier.subscribed(state(true, "connected again", 2));
  EXPECT_EQ(socket_.next(), "STATUS=connected again; 2 request(s) served");
}

TEST_F(ServiceNotifyTest, StoppingOnceAndNothingAfterIt) {
  ServiceNotifier notifier;
  notifier.subscribed(state(true, "connected"));
  ASSERT_TRUE(socket_.next());
  notifier.stopping(3);
  EXPECT_EQ(socket_.next(), "STOPPING=1\nSTATUS=stopping: finishing 3 queued request(s)");
  notifier.stopping(1);
  notifier.tick(state(false, "disconnected"));
  notifier.subscribed(state(true, "connected"));
  EXPECT_FALSE(socket_.pending());
}

TEST_F(ServiceNotifyTest, WatchdogPingsFromTheLoopWhenSystemdAsks) {
  ScopedEnv usec("WATCHDOG_USEC", "60000000");
  ScopedEnv pid("WATCHDOG_PID", std::to_string(::getpid()).c_str());
  ServiceNotifier notifier;
  notifier.subscribed(state(true, "connected"));
  ASSERT_TRUE(socket_.next());  // READY=1
  notifier.tick(state(true, "connected"));
  EXPECT_EQ(socket_.next(), "WATCHDOG=1");
  notifier.tick(state(true, "connected"));  // half the interval has not passed
  EXPECT_FALSE(socket_.pending());
}

TEST_F(ServiceNotifyTest, ReadyWithoutTheBrokerAfterTheFallbackSaysWhy) {
  ScopedEnv fallback("PA_READY_FALLBACK_SECONDS", "0.001");
  ServiceNotifier notifier;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the fallback
  notifier.tick(state(false, "broker b:1883 unreachable: Connection refused"));
  EXPECT_EQ(socket_.next(),
            "READY=1\nSTATUS=still trying to reach the broker: broker b:1883 unreachable: "
            "Connection refused; 0 request(s) served");
  notifier.subscribed(state(true, "connected"));
  EXPECT_EQ(socket_.next(), "STATUS=connected; 0 request(s) served");  // no second READY
}

TEST(ServiceNotifyOff, WithoutNotifySocketNothingIsSent) {
  NotifySocket socket;
  ScopedEnv notify("NOTIFY_SOCKET", nullptr);
  ServiceNotifier notifier;
  EXPECT_FALSE(notifier.active());
  notifier.subscribed(state(true, "connected"));
  notifier.stopping(0);
  EXPECT_FALSE(socket.pending());
}

}  // namespace
}  // namespace pa
