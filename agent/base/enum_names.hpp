#pragma once
// Names of enum values, one table per enum (an array of {value, name} pairs): the first name a
// table gives a value is the one shown; later ones are spellings also accepted when reading
// (LOG_LEVEL=warn). Reading ignores ASCII case.
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace pa {

template <class Enum>
using EnumName = std::pair<Enum, std::string_view>;

// The name shown for `value`; `unknown` when the table lacks it.
template <class Table, class Enum>
constexpr std::string_view enum_name(const Table& table, Enum value,
                                     std::string_view unknown = "unknown") noexcept {
  for (const auto& [candidate, name] : table)
    if (candidate == value) return name;
  return unknown;
}

constexpr bool equal_ignoring_case(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto fold = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (fold(a[i]) != fold(b[i])) return false;
  }
  return true;
}

// The value named `text` by any of its spellings; nullopt for an unknown name.
template <class Table>
constexpr auto parse_enum(const Table& table, std::string_view text) noexcept
    -> std::optional<std::decay_t<decltype(table.begin()->first)>> {
  for (const auto& [value, name] : table)
    if (equal_ignoring_case(name, text)) return value;
  return std::nullopt;
}

// The names shown, one per value, in table order.
template <class Table>
std::vector<std::string_view> shown_enum_names(const Table& table) {
  std::vector<std::string_view> names;
  std::vector<std::decay_t<decltype(table.begin()->first)>> seen;
  for (const auto& [value, name] : table) {
    bool known = false;
    for (const auto& other : seen) known = known || other == value;
    if (known) continue;
    seen.push_back(value);
    names.push_back(name);
  }
  return names;
}

}  // namespace pa
