#include "errors.hpp"

#include <fmt/format.h>

namespace pa::keystore {
namespace fs = std::filesystem;

PermissionError::PermissionError(fs::path path, std::string problem, std::string fix,
                                 std::string_view description)
    : StoreError(fmt::format("{}{} {}; fix: {}", description, path.string(), problem, fix)),
      path_(std::move(path)),
      problem_(std::move(problem)),
      fix_(std::move(fix)) {}

QuotaError::QuotaError(std::size_t held, std::size_t limit)
    : StoreError(fmt::format("the key store already holds {} key pairs, its limit of {}: no pair "
                             "for another device can be added",
                             held, limit)),
      held_(held),
      limit_(limit) {}

InstanceLockedError::InstanceLockedError(fs::path folder, pid_t holder)
    : StoreError(holder > 0 ? fmt::format("another provision-agent (PID {}) is using {}", holder,
                                          folder.string())
                            : fmt::format("another provision-agent is using {}", folder.string())),
      folder_(std::move(folder)),
      holder_(holder) {}

}  // namespace pa::keystore
