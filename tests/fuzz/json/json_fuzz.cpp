// parse_json_strictly (SPEC section 3.1), the gate every payload and decrypted plaintext passes:
// valid UTF-8 also behind \u escapes, unique member names in every object, at most 32 levels,
// iterative parsing, numbers at full precision.
//
// Input: a JSON text. An input that starts with 0xFF is a recipe for a large text instead:
// 0xFF PART 0x00 UNIT 0x00 PART 0x00 UNIT ... stands for the parts with every unit repeated the
// same number of times, up to 1 MiB in all, so that megabyte payloads (a million open brackets,
// nesting that closes, a long array, a long string) are tried too.
//
// The strict parser accepts exactly the texts RapidJSON's own iterative parser accepts whose
// document stays within the rules (checked here independently), giving the same document and
// leaving a null one when it refuses. An accepted document written out compactly is accepted
// again with the same depth and writes out to the same text; nested in arrays to 32 levels it is
// accepted, to 33 refused as too deep.
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/strict_json.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace pa;

constexpr std::size_t kLarge = std::size_t{1} << 20;

// RapidJSON as the agent configures it (no full-precision numbers: base/strict_json.cpp says
// why, and "0e308" reaches UB there), but without the structural rules.
constexpr unsigned kReferenceFlags =
    rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag;

// PART0 0x00 UNIT1 0x00 PART2 0x00 UNIT3 ...: the parts as they are, each unit repeated the same
// number of times, as often as fits in kLarge bytes ("[" 1M times, or "[" N times, "1", "]" N
// times).
std::string expand_recipe(std::string_view recipe) {
  std::vector<std::string_view> pieces;
  for (std::size_t start = 0;;) {
    const std::size_t end = recipe.find('\0', start);
    pieces.push_back(recipe.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  std::size_t literal = 0, units = 0;
  for (std::size_t i = 0; i < pieces.size(); ++i)
    (i % 2 == 0 ? literal : units) += pieces[i].size();
  const std::size_t times = units == 0 || literal >= kLarge ? 0 : (kLarge - literal) / units;
  std::string text;
  text.reserve(literal + units * times);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if (i % 2 == 0) {
      text += pieces[i];
    } else {
      for (std::size_t k = 0; k < times; ++k) text += pieces[i];
    }
  }
  return text;
}

// RFC 3629 UTF-8 written out here rather than taken from the agent: shortest forms only, no
// surrogates, nothing above U+10FFFF.
bool is_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    std::size_t length = 0;
    std::uint32_t code = 0, minimum = 0;
    if (byte < 0x80) {
      ++i;
      continue;
    } else if ((byte & 0xE0) == 0xC0) {
      length = 2, code = byte & 0x1F, minimum = 0x80;
    } else if ((byte & 0xF0) == 0xE0) {
      length = 3, code = byte & 0x0F, minimum = 0x800;
    } else if ((byte & 0xF8) == 0xF0) {
      length = 4, code = byte & 0x07, minimum = 0x10000;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

// What a document holds that the rules are about, found without recursion (the reference parser
// builds documents of any depth).
struct Shape {
  std::size_t depth = 0;  // containers nested; a scalar alone is 0
  bool duplicate_name = false;
  bool invalid_utf8 = false;
  bool infinite_number = false;  // past the largest double: RapidJSON reads it as infinity
};

// Whether RapidJSON's double is near the correctly rounded one. Without full precision it is not
// always that one: a few units in the last place off for 17 digits, about 8e-15 relative for 90
// digits (found by a long run). Nothing of the agent reads a fraction, and plugins get the text.
bool close_enough(double read, double rounded) {
  if (read == rounded) return true;
  if (!std::isfinite(read) || !std::isfinite(rounded)) return false;
  return std::fabs(read - rounded) <= 1e-13 * std::max(std::fabs(read), std::fabs(rounded));
}

Shape shape_of(const rapidjson::Value& root) {
  Shape shape;
  std::vector<std::pair<const rapidjson::Value*, std::size_t>> todo{{&root, 0}};
  std::vector<std::string_view> names;
  auto string_ok = [](const rapidjson::Value& value) {
    return is_utf8(std::string_view(value.GetString(), value.GetStringLength()));
  };
  while (!todo.empty()) {
    const auto [value, above] = todo.back();
    todo.pop_back();
    if (value->IsString()) {
      if (!string_ok(*value)) shape.invalid_utf8 = true;
    } else if (value->IsDouble()) {
      if (!std::isfinite(value->GetDouble())) shape.infinite_number = true;
    } else if (value->IsArray()) {
      shape.depth = std::max(shape.depth, above + 1);
      for (const auto& item : value->GetArray()) todo.emplace_back(&item, above + 1);
    } else if (value->IsObject()) {
      shape.depth = std::max(shape.depth, above + 1);
      names.clear();
      for (const auto& member : value->GetObject()) {
        if (!string_ok(member.name)) shape.invalid_utf8 = true;
        names.emplace_back(member.name.GetString(), member.name.GetStringLength());
        todo.emplace_back(&member.value, above + 1);
      }
      std::sort(names.begin(), names.end());
      if (std::adjacent_find(names.begin(), names.end()) != names.end())
        shape.duplicate_name = true;
    }
  }
  return shape;
}

std::string written(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  PA_FUZZ_CHECK(value.Accept(writer), "RapidJSON cannot write a document it parsed");
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string excerpt(std::string_view text) {
  return std::string(text.substr(0, 200)) + (text.size() > 200 ? "..." : "");
}

std::string seventeen_digits(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

// Every number of an accepted document has the value its text stands for: integers exactly,
// others as strtod rounds them (correctly), and never infinite. The texts come from a parse with
// kParseNumbersAsStringsFlag, which has the same structure with each number as its text.
void check_numbers(std::string_view text, const rapidjson::Value& doc) {
  rapidjson::Document texts;
  texts.Parse<kReferenceFlags | rapidjson::kParseNumbersAsStringsFlag>(text.data(), text.size());
  PA_FUZZ_CHECK(!texts.HasParseError(), "numbers as strings refused: " + excerpt(text));
  std::vector<std::pair<const rapidjson::Value*, const rapidjson::Value*>> todo{{&doc, &texts}};
  while (!todo.empty()) {
    const auto [value, as_text] = todo.back();
    todo.pop_back();
    if (value->IsArray()) {
      PA_FUZZ_CHECK(as_text->IsArray() && as_text->Size() == value->Size(), excerpt(text));
      for (rapidjson::SizeType i = 0; i < value->Size(); ++i)
        todo.emplace_back(&(*value)[i], &(*as_text)[i]);
    } else if (value->IsObject()) {
      PA_FUZZ_CHECK(as_text->IsObject() && as_text->MemberCount() == value->MemberCount(),
                    excerpt(text));
      for (auto a = value->MemberBegin(), b = as_text->MemberBegin(); a != value->MemberEnd();
           ++a, ++b)
        todo.emplace_back(&a->value, &b->value);
    } else if (value->IsNumber()) {
      PA_FUZZ_CHECK(as_text->IsString(), excerpt(text));
      const std::string number(as_text->GetString(), as_text->GetStringLength());
      const std::string context = number + " for " + excerpt(text);
      if ((value->IsUint64() || value->IsInt64()) && number.front() != '-') {
        std::uint64_t exact = 0;
        const auto [end, error] =
            std::from_chars(number.data(), number.data() + number.size(), exact);
        PA_FUZZ_CHECK(value->IsUint64() && error == std::errc() &&
                          end == number.data() + number.size() && exact == value->GetUint64(),
                      "read as " + written(*value) + ": " + context);
      } else if (value->IsInt64()) {
        std::int64_t exact = 0;
        const auto [end, error] =
            std::from_chars(number.data(), number.data() + number.size(), exact);
        PA_FUZZ_CHECK(error == std::errc() && end == number.data() + number.size() &&
                          exact == value->GetInt64(),
                      "read as " + written(*value) + ": " + context);
      } else {
        const double read = value->GetDouble();
        PA_FUZZ_CHECK(std::isfinite(read), "accepted a number beyond double's range (read as " +
                                               seventeen_digits(read) + "): " + context);
        const double rounded = std::strtod(number.c_str(), nullptr);
        PA_FUZZ_CHECK(close_enough(read, rounded), "read as " + seventeen_digits(read) +
                                                       ", not near strtod's " +
                                                       seventeen_digits(rounded) + ": " + context);
      }
    }
  }
}

const char* name_of(JsonFault fault) {
  switch (fault) {
    case JsonFault::none:
      return "none";
    case JsonFault::syntax:
      return "syntax";
    case JsonFault::depth:
      return "depth";
    case JsonFault::duplicate_name:
      return "duplicate_name";
  }
  return "?";
}

// The strict parse of `text`, with what every outcome promises.
JsonCheck parse_strictly(std::string_view text, rapidjson::Document& doc) {
  const JsonCheck check = parse_json_strictly(text, doc);
  PA_FUZZ_CHECK((check.fault == JsonFault::none) == check.message.empty(),
                std::string(name_of(check.fault)) + ": " + check.message);
  PA_FUZZ_CHECK(check.message.find('\n') == std::string::npos, check.message);
  if (check.fault != JsonFault::none)
    PA_FUZZ_CHECK(doc.IsNull(), "a refused text left a document: " + excerpt(text));
  return check;
}

// Accepts exactly what the reference parser accepts within the rules, with the same document.
void check_against_reference(std::string_view text, const JsonCheck& check,
                             const rapidjson::Document& doc) {
  rapidjson::Document reference;
  reference.Parse<kReferenceFlags>(text.data(), text.size());
  const std::string context =
      std::string(name_of(check.fault)) + " (" + check.message + ") for " + excerpt(text);
  if (reference.HasParseError()) {
    PA_FUZZ_CHECK(check.fault != JsonFault::none, "accepted what RapidJSON refuses: " + context);
    return;
  }
  const Shape shape = shape_of(reference);
  switch (check.fault) {
    case JsonFault::none:
      PA_FUZZ_CHECK(shape.depth <= kMaxJsonDepth && !shape.duplicate_name && !shape.invalid_utf8 &&
                        !shape.infinite_number,
                    "accepted against the rules: " + context);
      check_numbers(text, doc);
      // Written out rather than compared with ==, which is quadratic in an object's members.
      PA_FUZZ_CHECK(written(doc) == written(reference),
                    "another document than RapidJSON's: " + context);
      break;
    case JsonFault::depth:
      PA_FUZZ_CHECK(shape.depth > kMaxJsonDepth, context);
      break;
    case JsonFault::duplicate_name:
      PA_FUZZ_CHECK(shape.duplicate_name, context);
      break;
    case JsonFault::syntax:
      // What RapidJSON takes and the rules do not: an escape of a lone surrogate, and a number
      // past the largest double.
      PA_FUZZ_CHECK(shape.invalid_utf8 || shape.infinite_number, context);
      break;
  }
  if (check.fault == JsonFault::none) return;
  PA_FUZZ_CHECK(shape.depth > kMaxJsonDepth || shape.duplicate_name || shape.invalid_utf8 ||
                    shape.infinite_number,
                "refused within the rules: " + context);
}

// The same document, but for doubles, which may come back slightly off (close_enough): RapidJSON
// writes the shortest text for a double and, without full precision, may not read that text back
// to the very same double. Depth is at most kMaxJsonDepth, so recursion is fine here.
bool same_but_for_rounding(const rapidjson::Value& a, const rapidjson::Value& b) {
  if (a.IsDouble() || b.IsDouble())
    return a.IsNumber() && b.IsNumber() && close_enough(a.GetDouble(), b.GetDouble());
  if (a.GetType() != b.GetType()) return false;
  if (a.IsArray()) {
    if (a.Size() != b.Size()) return false;
    for (rapidjson::SizeType i = 0; i < a.Size(); ++i)
      if (!same_but_for_rounding(a[i], b[i])) return false;
    return true;
  }
  if (a.IsObject()) {
    if (a.MemberCount() != b.MemberCount()) return false;
    for (auto x = a.MemberBegin(), y = b.MemberBegin(); x != a.MemberEnd(); ++x, ++y)
      if (x->name != y->name || !same_but_for_rounding(x->value, y->value)) return false;
    return true;
  }
  return a == b;
}

std::string nested(const std::string& text, std::size_t levels) {
  return std::string(levels, '[') + text + std::string(levels, ']');
}

// An accepted document writes out to text that is accepted again, the same, and (`nest`) nests
// to the limit and no further.
void check_accepted(const rapidjson::Document& doc, bool nest) {
  const std::string text = written(doc);
  const std::size_t depth = shape_of(doc).depth;
  rapidjson::Document again;
  const JsonCheck check = parse_strictly(text, again);
  PA_FUZZ_CHECK(check.fault == JsonFault::none,
                "refuses its own writing: " + check.message + " for " + excerpt(text));
  PA_FUZZ_CHECK(shape_of(again).depth == depth, excerpt(text));
  PA_FUZZ_CHECK(same_but_for_rounding(again, doc), "reads back another document: " + excerpt(text));
  if (!nest) return;

  rapidjson::Document wrapped;
  const JsonCheck at_limit = parse_strictly(nested(text, kMaxJsonDepth - depth), wrapped);
  PA_FUZZ_CHECK(at_limit.fault == JsonFault::none,
                std::to_string(kMaxJsonDepth) + " levels refused: " + at_limit.message);
  const JsonCheck beyond = parse_strictly(nested(text, kMaxJsonDepth + 1 - depth), wrapped);
  PA_FUZZ_CHECK(beyond.fault == JsonFault::depth,
                std::to_string(kMaxJsonDepth + 1) + " levels: " + name_of(beyond.fault));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  std::string large;
  if (!text.empty() && static_cast<unsigned char>(text.front()) == 0xFF) {
    large = expand_recipe(text.substr(1));
    text = large;
  }
  rapidjson::Document doc;
  const JsonCheck check = parse_strictly(text, doc);
  check_against_reference(text, check, doc);
  // Nesting a megabyte document twice more would only slow the search down: the recipes reach
  // the depth limit by themselves.
  if (check.fault == JsonFault::none) check_accepted(doc, large.empty());
  return 0;
}
