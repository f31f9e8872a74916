// A network that never blocks (SPEC section 8): while the broker accepts TCP but never answers
// CONNECT, drops every SYN, or has a name that does not resolve, the agent's event loop keeps
// turning: READY=1 comes with the fallback and a STATUS= saying it is still trying, WATCHDOG=1
// never pauses longer than the watchdog interval, and the agent serves once a real broker is
// there. Read from a real notify socket, against listeners on 127.0.0.1 and a real mosquitto.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "agent_harness.hpp"
#include "notify_socket.hpp"

namespace pa::test {
namespace {

using Clock = std::chrono::steady_clock;

// WATCHDOG_USEC as systemd sets it for WatchdogSec=2: the agent pings every second.
constexpr auto kWatchdog = 2s;
constexpr const char* kWatchdogUsec = "2000000";
// How long each test watches the agent wait for its broker.
constexpr auto kWatch = 10s;

// A TCP listener on 127.0.0.1:port that is no broker.
class FakeBroker {
 public:
  enum class Mode {
    silent,      // accepts every connection and never reads or writes: CONNECT is never answered
    black_hole,  // its accept queue is kept full, so the kernel drops every further SYN
  };

  FakeBroker(int port, Mode mode) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
    const int on = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    const sockaddr_in address = loopback(port);
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listen_fd_, mode == Mode::black_hole ? 0 : 16) != 0)
      throw std::runtime_error(
          fmt::format("listen on 127.0.0.1:{}: {}", port, std::strerror(errno)));
    if (mode == Mode::black_hole) {
      // One connection that nobody accepts fills a backlog of 0 (Linux queues backlog + 1).
      const int filler = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (filler < 0 ||
          ::connect(filler, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0)
        throw std::runtime_error(fmt::format("filler connect: {}", std::strerror(errno)));
      held_.push_back(filler);
      return;
    }
    acceptor_ = std::thread([this] {
      while (!closing_) {
        pollfd descriptor{listen_fd_, POLLIN, 0};
        if (::poll(&descriptor, 1, 50) <= 0) continue;
        const int connection = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (connection < 0) continue;
        std::lock_guard lock(mutex_);
        held_.push_back(connection);
        ++accepted_;
      }
    });
  }
  ~FakeBroker() { close(); }
  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  std::size_t accepted() const {
    std::lock_guard lock(mutex_);
    return accepted_;
  }

  // Whether a connection attempt to it completes within `wait` (it must not, for a black hole).
  static bool connects_within(int port, std::chrono::milliseconds wait) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const sockaddr_in address = loopback(port);
    bool connected =
        ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
    if (!connected && errno == EINPROGRESS) {
      pollfd descriptor{fd, POLLOUT, 0};
      int error = 0;
      socklen_t length = sizeof error;
      connected = ::poll(&descriptor, 1, static_cast<int>(wait.count())) > 0 &&
                  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0;
    }
    ::close(fd);
    return connected;
  }

  // Closes the listener and every connection it holds: the port is free for a real broker.
  void close() {
    closing_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    std::lock_guard lock(mutex_);
    for (int fd : held_) ::close(fd);
    held_.clear();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
  }

 private:
  static sockaddr_in loopback(int port) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    return address;
  }

  int listen_fd_ = -1;
  std::atomic<bool> closing_{false};
  std::thread acceptor_;
  mutable std::mutex mutex_;
  std::vector<int> held_;
  std::size_t accepted_ = 0;
};

// The longest time between two WATCHDOG=1 pings from the first one to the end of the watch
// (the end counts: a loop that stopped pinging must show up).
Clock::duration longest_watchdog_gap(const NotifySocket& notify, Clock::time_point watch_end) {
  std::optional<Clock::time_point> last;
  Clock::duration longest{};
  for (const Notification& notification : notify.received()) {
    if (!is_watchdog(notification)) continue;
    if (last) longest = std::max(longest, notification.at - *last);
    last = notification.at;
  }
  if (!last) return Clock::duration::max();
  return std::max(longest, watch_end - *last);
}

std::string gap_ms(Clock::duration gap) {
  if (gap == Clock::duration::max()) return "no WATCHDOG=1 at all";
  return fmt::format("{} ms", std::chrono::duration_cast<std::chrono::milliseconds>(gap).count());
}

// The agent with a notify socket, the watchdog, a short READY fallback and a short CONNACK limit
// (both undocumented test variables), its broker at `port` or `host`.
std::map<std::string, std::string> service_environment(const NotifySocket& notify) {
  return {{"NOTIFY_SOCKET", notify.path()},
          {"WATCHDOG_USEC", kWatchdogUsec},
          {"PA_READY_FALLBACK_SECONDS", "3"},
          {"PA_CONNECT_TIMEOUT_SECONDS", "2"},
          {"LOG_LEVEL", "info"}};
}

// What every case checks after watching the agent for kWatch: READY=1 from the fallback, with a
// STATUS= that says it is still trying and names `broker`, and a watchdog that never paused.
void expect_ready_and_pinging(const NotifySocket& notify, Clock::time_point watch_end,
                              const std::string& broker) {
  const auto ready = std::find_if(notify.received().begin(), notify.received().end(), is_ready);
  ASSERT_NE(ready, notify.received().end()) << "no READY=1 within the fallback\n"
                                            << notify.transcript();
  const std::string status = notify_field(ready->text, "STATUS");
  EXPECT_NE(status.find("still trying to reach the broker"), std::string::npos) << status;
  EXPECT_NE(status.find(broker), std::string::npos) << status;
  const Clock::duration gap = longest_watchdog_gap(notify, watch_end);
  EXPECT_LE(gap, kWatchdog) << "the watchdog would have killed the agent: a gap of " << gap_ms(gap)
                            << "\n"
                            << notify.transcript();
}

// Once a real broker listens where the fake one did, the agent connects (after its back-off) and
// serves.
void expect_served_by_real_broker(Broker& broker, Agent& agent, NotifySocket& notify) {
  broker.start();
  auto observer = make_observer(broker.port());
  ASSERT_TRUE(wait_online(*observer, agent, 60s)) << agent.log();
  observer->publish("provision/net01/request", R"({"request_id":"n-1"})");
  auto response = wait_response(*observer, "net01", "n-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  EXPECT_TRUE(notify.wait_for(status_has("connected to broker"), 10s)) << notify.transcript();
  EXPECT_EQ(agent.stop(), 0);
}

TEST(NetworkNeverBlocks, ABrokerThatNeverAnswersConnect) {
  Broker broker;
  broker.stop();  // its port, for a listener that accepts TCP and never answers CONNECT
  FakeBroker silent(broker.port(), FakeBroker::Mode::silent);
  NotifySocket notify;
  Agent agent(broker.port(), service_environment(notify));
  agent.start();
  notify.collect(kWatch);
  const auto watch_end = Clock::now();
  expect_ready_and_pinging(notify, watch_end, fmt::format("127.0.0.1:{}", broker.port()));
  // The CONNACK limit gave up on the silent broker and tried again.
  EXPECT_GE(silent.accepted(), 2u) << agent.log();
  EXPECT_TRUE(notify.wait_for(status_has("did not answer within 2 s"), 1s)) << notify.transcript();

  silent.close();
  expect_served_by_real_broker(broker, agent, notify);
}

TEST(NetworkNeverBlocks, ABrokerWhoseSynsAreDropped) {
  Broker broker;
  broker.stop();
  FakeBroker black_hole(broker.port(), FakeBroker::Mode::black_hole);
  ASSERT_FALSE(FakeBroker::connects_within(broker.port(), 500ms))
      << "the premise: a SYN to a listener with a full accept queue is dropped";
  NotifySocket notify;
  Agent agent(broker.port(), service_environment(notify));
  agent.start();
  notify.collect(kWatch);
  const auto watch_end = Clock::now();
  expect_ready_and_pinging(notify, watch_end, fmt::format("127.0.0.1:{}", broker.port()));
  EXPECT_TRUE(notify.wait_for(status_has("did not answer within 2 s"), 1s)) << notify.transcript();

  black_hole.close();
  expect_served_by_real_broker(broker, agent, notify);
}

TEST(NetworkNeverBlocks, ABrokerNameThatDoesNotResolve) {
  NotifySocket notify;
  auto environment = service_environment(notify);
  environment["MQTT_HOST"] = "nonexistent.invalid";  // RFC 6761: never resolves
  Agent agent(free_port(), environment);
  agent.start();
  notify.collect(kWatch);
  const auto watch_end = Clock::now();
  expect_ready_and_pinging(notify, watch_end, "nonexistent.invalid");
  EXPECT_TRUE(agent.running());
  EXPECT_EQ(agent.stop(), 0) << "a look-up in progress must not hold up the stop";
  EXPECT_TRUE(notify.wait_for(is_stopping, 2s)) << notify.transcript();
}

}  // namespace
}  // namespace pa::test
