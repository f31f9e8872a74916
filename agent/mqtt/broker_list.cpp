#include "mqtt/broker_list.hpp"

#include <fmt/format.h>

namespace pa::mqtt {

std::string to_string(const BrokerAddress& broker) {
  if (broker.host.find(':') != std::string::npos)
    return fmt::format("[{}]:{}", broker.host, broker.port);
  return fmt::format("{}:{}", broker.host, broker.port);
}

}  // namespace pa::mqtt
