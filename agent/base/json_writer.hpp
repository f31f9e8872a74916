#pragma once
// One JSON object written field by field, in call order: the key order of the published messages
// is what servers and tests see, so nothing here sorts or deduplicates.
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pa {

class JsonObjectWriter {
 public:
  JsonObjectWriter() { writer_.StartObject(); }
  JsonObjectWriter(const JsonObjectWriter&) = delete;
  JsonObjectWriter& operator=(const JsonObjectWriter&) = delete;

  JsonObjectWriter& field(std::string_view name, std::string_view value) {
    key(name);
    writer_.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
    return *this;
  }
  // A string literal would otherwise convert to bool rather than to std::string_view.
  JsonObjectWriter& field(std::string_view name, const char* value) {
    return field(name, std::string_view(value));
  }
  JsonObjectWriter& field(std::string_view name, bool value) {
    key(name);
    writer_.Bool(value);
    return *this;
  }
  JsonObjectWriter& field(std::string_view name, std::int64_t value) {
    key(name);
    writer_.Int64(value);
    return *this;
  }
  // Leaves the key out when there is no value.
  JsonObjectWriter& optional_field(std::string_view name, const std::optional<std::string>& value) {
    if (value) field(name, *value);
    return *this;
  }

  // A nested object under `name`: the fields that follow go into it until end_object().
  JsonObjectWriter& begin_object(std::string_view name) {
    key(name);
    writer_.StartObject();
    return *this;
  }
  JsonObjectWriter& end_object() {
    writer_.EndObject();
    return *this;
  }

  // The finished text; closes the outer object on the first call.
  std::string str() {
    if (!writer_.IsComplete()) writer_.EndObject();
    return std::string(buffer_.GetString(), buffer_.GetSize());
  }

 private:
  void key(std::string_view name) {
    writer_.Key(name.data(), static_cast<rapidjson::SizeType>(name.size()));
  }

  rapidjson::StringBuffer buffer_;
  rapidjson::Writer<rapidjson::StringBuffer> writer_{buffer_};
};

}  // namespace pa
