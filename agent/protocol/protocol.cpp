#include "protocol/protocol.hpp"

#include <fmt/format.h>

namespace pa {

namespace {

// One table for the codes' names (SPEC section 3.3): to_string and parse_error_code read it.
constexpr std::pair<ErrorCode, const char*> kErrorNames[] = {
    {ErrorCode::invalid_json, "invalid_json"},
    {ErrorCode::invalid_request, "invalid_request"},
    {ErrorCode::invalid_device_id, "invalid_device_id"},
    {ErrorCode::invalid_user_id, "invalid_user_id"},
    {ErrorCode::device_mismatch, "device_mismatch"},
    {ErrorCode::unknown_action, "unknown_action"},
    {ErrorCode::payload_too_large, "payload_too_large"},
    {ErrorCode::decrypt_failed, "decrypt_failed"},
    {ErrorCode::e2ee_required, "e2ee_required"},
    {ErrorCode::unauthorized, "unauthorized"},
    {ErrorCode::replay, "replay"},
    {ErrorCode::not_found, "not_found"},
    {ErrorCode::busy, "busy"},
    {ErrorCode::quota_exceeded, "quota_exceeded"},
    {ErrorCode::expired, "expired"},
    {ErrorCode::keygen_failed, "keygen_failed"},
    {ErrorCode::storage_failed, "storage_failed"},
    {ErrorCode::plugin_failed, "plugin_failed"},
};

}  // namespace

const char* to_string(ErrorCode code) noexcept {
  for (const auto& [known, name] : kErrorNames)
    if (known == code) return name;
  return "plugin_failed";
}

std::optional<ErrorCode> parse_error_code(std::string_view name) noexcept {
  for (const auto& [code, known] : kErrorNames)
    if (name == known) return code;
  return std::nullopt;
}

std::optional<std::pair<std::string, TopicKind>> parse_request_topic(std::string_view topic,
                                                                     std::string_view base) {
  if (topic.size() <= base.size() + 1 || topic.substr(0, base.size()) != base ||
      topic[base.size()] != '/')
    return std::nullopt;
  std::string_view rest = topic.substr(base.size() + 1);
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view device = rest.substr(0, slash);
  std::string_view leaf = rest.substr(slash + 1);
  TopicKind kind;
  if (leaf == "request")
    kind = TopicKind::request;
  else if (leaf == "update")
    kind = TopicKind::update;
  else if (leaf == "delete")
    kind = TopicKind::remove;
  else
    return std::nullopt;
  return std::make_pair(std::string(device), kind);
}

const char* topic_action(TopicKind kind) {
  switch (kind) {
    case TopicKind::update:
      return kActionUpdate;
    case TopicKind::remove:
      return kActionDelete;
    case TopicKind::request:
      break;
  }
  return kActionGenerate;
}

namespace topics {

std::string request_filter(std::string_view base, TopicKind kind) {
  const char* leaf = kind == TopicKind::update   ? "update"
                     : kind == TopicKind::remove ? "delete"
                                                 : "request";
  return fmt::format("{}/+/{}", base, leaf);
}
std::string request(std::string_view base, std::string_view device) {
  return fmt::format("{}/{}/request", base, device);
}
std::string response(std::string_view base, std::string_view device) {
  return fmt::format("{}/{}/response", base, device);
}
std::string public_key(std::string_view keys_base, std::string_view device) {
  return fmt::format("{}/{}/public", keys_base, device);
}
std::string agent_status(std::string_view base, std::string_view client_id) {
  return fmt::format("{}/agents/{}/status", base, client_id);
}
std::string agent_status_filter(std::string_view base) {
  return fmt::format("{}/agents/+/status", base);
}
std::string agent_audit(std::string_view base, std::string_view client_id) {
  return fmt::format("{}/agents/{}/audit", base, client_id);
}
std::string agents_prefix(std::string_view base) {
  return fmt::format("{}/agents/", base);
}
std::string replay_blocked(std::string_view base, std::string_view device) {
  return fmt::format("{}/status/{}/replay_blocked", base, device);
}
std::string rotation_due(std::string_view base, std::string_view device) {
  return fmt::format("{}/status/{}/rotation_due", base, device);
}

}  // namespace topics

}  // namespace pa
