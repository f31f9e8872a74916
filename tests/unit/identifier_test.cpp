// SPEC section 3.1: what may name a device or a user, and so a folder of the key store.
#include "keystore/identifier.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pa::keystore {
namespace {

TEST(Identifier, RejectsHostileIds) {
  const std::vector<std::string> hostile = {
      "..",
      ".",
      "a/b",
      "/",
      "/etc",
      "../etc",
      "",
      std::string(kMaxIdentifierLength + 1, 'a'),
      "-a",
      ".a",
      "_a",
      "pH01\xC3\xA9",  // "pH01é" in UTF-8
      std::string("a\0b", 3),
      std::string("a\0", 2),
      " a",
      "a ",
      "a b",
      "a\\b",
      "a\nb",
      "a*",
      "a:b",
      "~a",
  };
  for (const std::string& id : hostile) {
    EXPECT_FALSE(is_valid_identifier(id))
        << "accepted \"" << id << "\" (" << id.size() << " bytes)";
  }
}

TEST(Identifier, AcceptsValidIds) {
  const std::vector<std::string> valid = {
      "pH01",
      "5",
      "a",
      "Z",
      "a.b_c-d",
      "sensor-01.greenhouse_B",
      "1..2",
      "a-",
      "a.",
      std::string(100, 'x'),  // the original server's longest device id
      std::string(kMaxIdentifierLength, 'a'),
      "0" + std::string(kMaxIdentifierLength - 1, '-'),
  };
  for (const std::string& id : valid) {
    EXPECT_TRUE(is_valid_identifier(id)) << "rejected \"" << id << "\"";
  }
}

TEST(Identifier, LengthLimitIs128) {
  EXPECT_EQ(kMaxIdentifierLength, 128u);
  EXPECT_TRUE(is_valid_identifier(std::string(128, '7')));
  EXPECT_FALSE(is_valid_identifier(std::string(129, '7')));
}

}  // namespace
}  // namespace pa::keystore
