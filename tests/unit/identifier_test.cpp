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

// SPEC section 3.5: a device folder named like a key file would collide with a legacy device
// folder's file of that name, so the store's own file names are never ids.
TEST(Identifier, RejectsTheStoresFileNames) {
  for (const char* name : {"sensor_private.pem", "sensor_public.pem", "sensor_private.prev.pem",
                           "sensor_public.prev.pem", "sensor_cert.pem", "sensor_cert.prev.pem"}) {
    EXPECT_FALSE(is_valid_identifier(name)) << name;
  }
  // Only those exact names: near misses are ordinary ids.
  for (const char* name :
       {"sensor_private", "sensor_private.pem2", "Sensor_private.pem", "sensor_private.pe",
        "xsensor_public.pem", "sensor_cert.pem.bak", "sensor_public.prev"}) {
    EXPECT_TRUE(is_valid_identifier(name)) << name;
  }
}

TEST(Identifier, AcceptsEveryLengthUpTo128) {
  // The original server's ids go up to 100 characters; every length up to ours is accepted.
  for (std::size_t length = 1; length <= kMaxIdentifierLength; ++length) {
    EXPECT_TRUE(is_valid_identifier("7" + std::string(length - 1, 'a'))) << length;
    EXPECT_TRUE(is_valid_identifier(std::string(length, 'Z'))) << length;
  }
  const std::string hundred = "sensor-" + std::string(93, '0');
  ASSERT_EQ(hundred.size(), 100u);
  EXPECT_TRUE(is_valid_identifier(hundred));
}

TEST(Identifier, LengthLimitIs128) {
  EXPECT_EQ(kMaxIdentifierLength, 128u);
  EXPECT_TRUE(is_valid_identifier(std::string(128, '7')));
  EXPECT_FALSE(is_valid_identifier(std::string(129, '7')));
}

}  // namespace
}  // namespace pa::keystore
