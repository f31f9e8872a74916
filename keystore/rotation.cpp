#include "rotation.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <charconv>

#include "errors.hpp"
#include "file_names.hpp"
#include "file_util.hpp"

namespace pa::keystore {
namespace {

// SPEC section 5: a certificate past this share of its lifetime is due for rotation.
constexpr int kCertificatePercent = 80;

}  // namespace

std::optional<RotationDue> rotation_due(std::int64_t created,
                                        const std::optional<CertificateInfo>& certificate,
                                        std::optional<std::int64_t> max_age_s, std::int64_t now) {
  const std::int64_t age = now > created ? now - created : 0;
  const std::optional<std::int64_t> not_after =
      certificate ? std::optional<std::int64_t>(certificate->not_after) : std::nullopt;
  if (certificate) {
    const std::int64_t lifetime = certificate->not_after - certificate->not_before;
    if (now >= certificate->not_after)
      return RotationDue{"the certificate has expired", age, not_after};
    if (lifetime > 0 && (now - certificate->not_before) * 100 >= lifetime * kCertificatePercent)
      return RotationDue{
          fmt::format("the certificate is past {}% of its lifetime", kCertificatePercent), age,
          not_after};
  }
  if (max_age_s && age > *max_age_s)
    return RotationDue{
        fmt::format("the key is older than PROVISION_KEY_MAX_AGE={}", format_duration(*max_age_s)),
        age, not_after};
  return std::nullopt;
}

std::optional<KeyAge> key_age(DeviceFolder folder, std::optional<std::int64_t> max_age_s,
                              std::int64_t now) {
  UniqueFd dir(::open(folder.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return std::nullopt;
  struct stat st {};
  if (::fstatat(dir.get(), kPrivateKeyFile, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
    return std::nullopt;
  KeyAge age;
  age.created = static_cast<std::int64_t>(st.st_mtim.tv_sec);
  try {
    if (auto pem = read_key_file_no_follow(folder.dir / kCertificateFile))
      age.certificate = read_certificate_info(*pem);
  } catch (const StoreError&) {
    // An unreadable certificate is reported by `keys verify`; the key's age still counts.
  }
  age.due = rotation_due(age.created, age.certificate, max_age_s, now);
  age.folder = std::move(folder);
  return age;
}

std::vector<KeyAge> key_ages(const std::filesystem::path& root,
                             std::optional<std::int64_t> max_age_s, std::int64_t now) {
  std::vector<KeyAge> ages;
  for (DeviceFolder& folder : list_device_folders(root))
    if (std::optional<KeyAge> age = key_age(std::move(folder), max_age_s, now))
      ages.push_back(std::move(*age));
  return ages;
}

std::optional<std::int64_t> parse_duration(std::string_view text) {
  if (text.size() < 2) return std::nullopt;
  std::int64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return std::nullopt;
  }
  std::int64_t number = 0;
  const std::string_view digits = text.substr(0, text.size() - 1);
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
  if (error != std::errc() || end != digits.data() + digits.size() || number <= 0 ||
      number > (std::int64_t{1} << 40) / unit)
    return std::nullopt;
  return number * unit;
}

std::string format_duration(std::int64_t seconds) {
  for (const auto& [unit, suffix] :
       {std::pair{86400, 'd'}, std::pair{3600, 'h'}, std::pair{60, 'm'}})
    if (seconds % unit == 0) return fmt::format("{}{}", seconds / unit, suffix);
  return fmt::format("{}s", seconds);
}

}  // namespace pa::keystore
