#pragma once
// Identifier validation (SPEC section 3.1): 1 to 128 characters of A-Z a-z 0-9 . _ -,
// starting with a letter or digit. Anything else never reaches the file system.
#include <string_view>

namespace pa::keystore {

inline constexpr std::size_t kMaxIdentifierLength = 128;

bool is_valid_identifier(std::string_view id) noexcept;

}  // namespace pa::keystore
