#pragma once
// Key age (SPEC section 5): a device is due for rotation when its key is older than
// PROVISION_KEY_MAX_AGE, or its certificate is past 80% of its lifetime (or expired). Pure
// functions of the times they are given, so a clock that jumped is handled by asking again.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "key_store.hpp"
#include "x509.hpp"

namespace pa::keystore {

// Why a device is due, for `keys due`, the log and P/status/D/rotation_due.
struct RotationDue {
  std::string reason;                     // "key older than 365d", "certificate past 80% ..."
  std::int64_t age_s = 0;                 // the key's age
  std::optional<std::int64_t> not_after;  // the certificate's end, when there is one
};

// Whether a key created at `created` (Unix seconds) with `certificate` is due at `now`.
std::optional<RotationDue> rotation_due(std::int64_t created,
                                        const std::optional<CertificateInfo>& certificate,
                                        std::optional<std::int64_t> max_age_s, std::int64_t now);

// One device's key age as the store holds it.
struct KeyAge {
  DeviceFolder folder;
  std::int64_t created = 0;  // the private key's modification time
  std::optional<CertificateInfo> certificate;
  std::optional<RotationDue> due;
};

// One device's key age, or nullopt when its private key cannot be read (no file, not a regular
// file, a folder that cannot be opened). Read-only.
std::optional<KeyAge> key_age(DeviceFolder folder, std::optional<std::int64_t> max_age_s,
                              std::int64_t now);

// Every device of the store at `root` with its age and what is due. Read-only; a device whose
// files cannot be read is left out. Throws StoreError when the root cannot be listed.
std::vector<KeyAge> key_ages(const std::filesystem::path& root,
                             std::optional<std::int64_t> max_age_s, std::int64_t now);

// "365d", "12h", "90m", "30s" -> seconds (SPEC section 5: an integer with s, m, h or d); nullopt
// for anything else.
std::optional<std::int64_t> parse_duration(std::string_view text);
// Seconds in the largest unit that divides them ("31536000" -> "365d").
std::string format_duration(std::int64_t seconds);

}  // namespace pa::keystore
