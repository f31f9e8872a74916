#include "base/strict_json.hpp"

#include <fmt/format.h>
#include <rapidjson/encodedstream.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <cmath>
#include <set>
#include <vector>

#include "base/text.hpp"

namespace pa {
namespace {

// Not kParseFullPrecisionFlag: RapidJSON 1.1.0's full-precision path crashes and misreads some
// numbers (Tencent/rapidjson #1249, #1251; found by tests/fuzz/json). The agent reads only
// integers itself, which parse exactly either way, and plugins get the validated text, not a
// re-serialisation, so no number they see depends on the parse's rounding.
constexpr unsigned kParseFlags =
    rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag;

// SAX pass that checks depth and member-name uniqueness before anything builds a document; a
// handler returning false stops the reader at once.
class StructureCheck : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, StructureCheck> {
 public:
  bool StartObject() {
    if (!enter()) return false;
    names_.emplace_back();
    objects_.push_back(true);
    return true;
  }
  bool String(const char* text, rapidjson::SizeType length, bool /*copy*/) {
    return decodes_to_utf8(text, length);
  }
  bool Key(const char* name, rapidjson::SizeType length, bool /*copy*/) {
    if (!decodes_to_utf8(name, length)) return false;
    if (names_.back().emplace(name, length).second) return true;
    fault_ = JsonFault::duplicate_name;
    message_ = fmt::format("the member name \"{}\" appears twice in one object",
                           printable(std::string_view(name, length)));
    return false;
  }
  bool EndObject(rapidjson::SizeType /*count*/) {
    names_.pop_back();
    objects_.pop_back();
    return true;
  }
  bool StartArray() {
    if (!enter()) return false;
    objects_.push_back(false);
    return true;
  }
  bool EndArray(rapidjson::SizeType /*count*/) {
    objects_.pop_back();
    return true;
  }
  // A number past the largest double reads as infinity without a parse error, and no JSON
  // reader agrees on what it means (found by tests/fuzz/json).
  bool Double(double value) {
    if (std::isfinite(value)) return true;
    fault_ = JsonFault::syntax;
    message_ = "a number beyond the range of a double";
    return false;
  }

  JsonFault fault() const { return fault_; }
  const std::string& message() const { return message_; }

 private:
  // The reader validates the bytes it reads, not what a \u escape stands for: RapidJSON turns a
  // lone surrogate (\udc00) into bytes that are not UTF-8, which would reach the plugins and
  // every message that echoes the field (SPEC 3.1 and 3.5).
  bool decodes_to_utf8(const char* text, rapidjson::SizeType length) {
    if (is_valid_utf8(std::string_view(text, length))) return true;
    fault_ = JsonFault::syntax;
    message_ = "a \\u escape stands for a lone surrogate, which is not a character (invalid UTF-8)";
    return false;
  }
  bool enter() {
    if (objects_.size() < kMaxJsonDepth) return true;
    fault_ = JsonFault::depth;
    message_ = fmt::format("JSON nested deeper than {} levels", kMaxJsonDepth);
    return false;
  }
  // A name is valid UTF-8 here (the reader validated it); only control characters are escaped
  // so the message stays one line.
  static std::string printable(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, 64)) {
      if (static_cast<unsigned char>(c) < 0x20)
        out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
      else
        out += c;
    }
    return text.size() > 64 ? out + "..." : out;
  }

  std::vector<std::set<std::string>> names_;
  std::vector<bool> objects_;  // the open containers, innermost last
  JsonFault fault_ = JsonFault::none;
  std::string message_;
};

}  // namespace

JsonCheck parse_json_strictly(std::string_view text, rapidjson::Document& doc) {
  doc.SetNull();
  StructureCheck check;
  rapidjson::Reader reader;
  rapidjson::MemoryStream bytes(text.data(), text.size());
  rapidjson::EncodedInputStream<rapidjson::UTF8<>, rapidjson::MemoryStream> stream(bytes);
  const rapidjson::ParseResult result = reader.Parse<kParseFlags>(stream, check);
  if (check.fault() != JsonFault::none) return JsonCheck{check.fault(), check.message()};
  if (result.IsError()) {
    return JsonCheck{JsonFault::syntax,
                     fmt::format("{} (at byte {})", rapidjson::GetParseError_En(result.Code()),
                                 result.Offset())};
  }
  // The structure is known to be within the limits: building the document is safe now.
  doc.Parse<kParseFlags>(text.data(), text.size());
  if (doc.HasParseError()) {
    doc.SetNull();
    return JsonCheck{JsonFault::syntax, rapidjson::GetParseError_En(doc.GetParseError())};
  }
  return JsonCheck{};
}

}  // namespace pa
