// A broker that misbehaves on purpose, on a free 127.0.0.1 port, for what a real mosquitto will
// not do (SPEC 3.6): accept a connection and drop it right after the CONNACK or at SUBSCRIBE,
// refuse every subscription (mosquitto 2.0's ACL does not check subscriptions at all), or speak
// only MQTT 3.1.1 the way RabbitMQ 3.10 does (an MQTT 5 CONNECT is closed without a word).
// It counts the CONNECTs it got and keeps each CONNECT's bytes, so a test can read what the
// client asked for (MQTT 5 properties). Every connection is served on its own thread; the
// destructor closes everything and joins them.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "test_support.hpp"

namespace pa::test {

class FakeMqttBroker {
 public:
  enum class Mode {
    kick_after_connack,  // CONNACK (success), then the connection is closed at once
    close_at_subscribe,  // CONNACK, then closed when the client subscribes
    refuse_subscribe,    // CONNACK, then every subscription refused (SUBACK 0x80)
    take_over,           // serves until the client's first PUBLISH, then DISCONNECT 0x8E (MQTT 5:
                         // "session taken over", which Debian 12's mosquitto 2.0.11 never sends)
    mqtt311_only,        // an MQTT 5 CONNECT is closed unanswered; 3.1.1 gets CONNACK and SUBACKs
  };

  explicit FakeMqttBroker(Mode mode) : mode_(mode), port_(free_port()) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
    const int on = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port_));
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listen_fd_, 16) != 0)
      throw std::runtime_error(fmt::format("listen: {}", std::strerror(errno)));
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~FakeMqttBroker() {
    closing_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& connection : connections_) connection.join();
    ::close(listen_fd_);
  }
  FakeMqttBroker(const FakeMqttBroker&) = delete;
  FakeMqttBroker& operator=(const FakeMqttBroker&) = delete;

  int port() const { return port_; }
  // CONNECT packets received (every protocol version).
  std::size_t connects() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return connects_.size();
  }
  // CONNECTs by client id.
  std::size_t connects_of(const std::string& client_id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t count = 0;
    for (const Connect& connect : connects_) count += connect.client_id == client_id ? 1 : 0;
    return count;
  }
  // The MQTT 5 CONNECT properties of the last CONNECT from `client_id` with protocol level 5:
  // property identifier -> value (integers only: 0x11 session expiry, 0x21 receive maximum...).
  std::map<int, std::uint32_t> v5_properties_of(const std::string& client_id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = connects_.rbegin(); it != connects_.rend(); ++it)
      if (it->client_id == client_id && it->level == 5) return it->properties;
    return {};
  }

 private:
  struct Connect {
    int level = 0;
    std::string client_id;
    std::map<int, std::uint32_t> properties;
  };

  void accept_loop() {
    while (!closing_) {
      pollfd descriptor{listen_fd_, POLLIN, 0};
      if (::poll(&descriptor, 1, 50) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      connections_.emplace_back([this, fd] {
        serve(fd);
        close_gracefully(fd);
      });
    }
  }

  // A close with the client's packets still unread would reset the connection, and a reset can
  // discard what we sent last (the DISCONNECT 0x8E) before the client reads it: send FIN, read
  // until the client closes too (at most 2 s), then close.
  void close_gracefully(int fd) {
    ::shutdown(fd, SHUT_WR);
    std::uint8_t sink[512];
    for (int turn = 0; turn < 40 && !closing_; ++turn) {
      pollfd descriptor{fd, POLLIN, 0};
      if (::poll(&descriptor, 1, 50) <= 0) continue;
      if (::read(fd, sink, sizeof sink) <= 0) break;
    }
    ::close(fd);
  }

  // Reads exactly `size` bytes, polling so that closing_ ends the wait; false on EOF or close.
  bool read_exact(int fd, std::uint8_t* data, std::size_t size) {
    std::size_t done = 0;
    while (done < size) {
      if (closing_) return false;
      pollfd descriptor{fd, POLLIN, 0};
      if (::poll(&descriptor, 1, 50) <= 0) continue;
      const ssize_t got = ::read(fd, data + done, size - done);
      if (got <= 0) return false;
      done += static_cast<std::size_t>(got);
    }
    return true;
  }

  // One MQTT packet: its first byte (type and flags) and body.
  std::optional<std::pair<int, std::vector<std::uint8_t>>> read_packet(int fd) {
    std::uint8_t header = 0;
    if (!read_exact(fd, &header, 1)) return std::nullopt;
    std::uint32_t length = 0;
    for (int shift = 0; shift < 28; shift += 7) {
      std::uint8_t byte = 0;
      if (!read_exact(fd, &byte, 1)) return std::nullopt;
      length |= static_cast<std::uint32_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
    }
    std::vector<std::uint8_t> body(length);
    if (length > 0 && !read_exact(fd, body.data(), length)) return std::nullopt;
    return std::make_pair(static_cast<int>(header), std::move(body));
  }

  static std::uint32_t varint(const std::vector<std::uint8_t>& data, std::size_t& at) {
    std::uint32_t value = 0;
    for (int shift = 0; shift < 28 && at < data.size(); shift += 7) {
      const std::uint8_t byte = data[at++];
      value |= static_cast<std::uint32_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
    }
    return value;
  }

  static Connect parse_connect(const std::vector<std::uint8_t>& body) {
    Connect connect;
    if (body.size() < 10) return connect;
    std::size_t at = 2 + ((body[0] << 8) | body[1]);  // protocol name
    if (at + 4 > body.size()) return connect;
    connect.level = body[at];
    at += 4;  // level, flags, keep-alive
    if (connect.level == 5) {
      // Two statements: varint() moves `at` past the length, and the order in which the operands
      // of one + are evaluated is unspecified (clang and GCC differ; the clang build misread
      // every MQTT 5 CONNECT here).
      const std::size_t length = varint(body, at);
      const std::size_t end = at + length;
      while (at < end && at < body.size()) {
        const int id = body[at++];
        auto number = [&](int bytes) {
          std::uint32_t value = 0;
          for (int i = 0; i < bytes && at < body.size(); ++i) value = (value << 8) | body[at++];
          return value;
        };
        auto skip_string = [&] { at += 2 + static_cast<std::size_t>(number(2)); };
        switch (id) {
          case 0x11:
          case 0x27:
            connect.properties[id] = number(4);
            break;
          case 0x21:
          case 0x22:
            connect.properties[id] = number(2);
            break;
          case 0x17:
          case 0x19:
            connect.properties[id] = number(1);
            break;
          case 0x26:
            skip_string();
            skip_string();
            break;
          case 0x15:
          case 0x16:
            skip_string();
            break;
          default:
            at = end;
            break;  // unknown: stop reading properties
        }
      }
      at = end;
    }
    if (at + 2 <= body.size()) {
      const std::size_t length = (body[at] << 8) | body[at + 1];
      if (at + 2 + length <= body.size())
        connect.client_id.assign(body.begin() + static_cast<long>(at) + 2,
                                 body.begin() + static_cast<long>(at + 2 + length));
    }
    return connect;
  }

  static void send(int fd, const std::vector<std::uint8_t>& bytes) {
    const ssize_t ignored = ::write(fd, bytes.data(), bytes.size());
    (void)ignored;
  }

  void serve(int fd) {
    auto packet = read_packet(fd);
    if (!packet || (packet->first >> 4) != 1) return;  // not a CONNECT
    const Connect connect = parse_connect(packet->second);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      connects_.push_back(connect);
    }
    const bool v5 = connect.level == 5;
    if (mode_ == Mode::mqtt311_only && v5) return;  // RabbitMQ 3.10: closed, not a word
    send(fd, v5 ? std::vector<std::uint8_t>{0x20, 3, 0, 0, 0}
                : std::vector<std::uint8_t>{0x20, 2, 0, 0});
    if (mode_ == Mode::kick_after_connack) return;
    while (auto next = read_packet(fd)) {
      const int type = next->first >> 4;
      const auto& body = next->second;
      if (type == 8 && body.size() >= 2) {  // SUBSCRIBE
        if (mode_ == Mode::close_at_subscribe) return;
        // SUBACK granting QoS 1 (or refusing) every filter.
        std::size_t at = 2;
        if (v5) at += 1 + body[2];  // properties (short in every client we meet here)
        std::size_t filters = 0;
        while (at + 2 <= body.size()) {
          at += 2 + static_cast<std::size_t>((body[at] << 8) | body[at + 1]) + 1;
          ++filters;
        }
        std::vector<std::uint8_t> suback{0x90, 0, body[0], body[1]};
        if (v5) suback.push_back(0);
        suback.insert(suback.end(), filters, mode_ == Mode::refuse_subscribe ? 0x80 : 1);
        suback[1] = static_cast<std::uint8_t>(suback.size() - 2);
        send(fd, suback);
      } else if (type == 3) {  // PUBLISH
        const int qos = (next->first >> 1) & 3;
        const std::size_t topic = body.size() >= 2 ? ((body[0] << 8) | body[1]) : 0;
        if (qos > 0 && body.size() >= topic + 4)
          send(fd, {0x40, 2, body[topic + 2], body[topic + 3]});
        if (mode_ == Mode::take_over && v5) {
          send(fd, {0xe0, 1, 0x8e});  // DISCONNECT: session taken over
          return;
        }
      } else if (type == 12) {  // PINGREQ
        send(fd, {0xd0, 0});
      } else if (type == 14) {  // DISCONNECT
        return;
      }
    }
  }

  Mode mode_;
  int port_;
  int listen_fd_ = -1;
  std::atomic<bool> closing_{false};
  std::thread acceptor_;
  std::vector<std::thread> connections_;  // touched by the acceptor, then joined by the destructor
  mutable std::mutex mutex_;
  std::vector<Connect> connects_;
};

}  // namespace pa::test
