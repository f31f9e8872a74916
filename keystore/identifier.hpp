#pragma once
// Identifier validation (SPEC section 3.1): 1 to 128 characters of A-Z a-z 0-9 . _ -,
// starting with a letter or digit, and not one of the key store's own file names (SPEC 3.5: a
// device folder named sensor_private.pem would collide with a legacy folder's key file).
// Anything else never reaches the file system.
#include <cstddef>
#include <string_view>

namespace pa::keystore {

inline constexpr std::size_t kMaxIdentifierLength = 128;

bool is_valid_identifier(std::string_view id) noexcept;

}  // namespace pa::keystore
