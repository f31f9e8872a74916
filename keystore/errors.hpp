#pragma once
// The key store's exceptions. Everything the store throws about the disk is a StoreError; the
// subtypes carry what a caller maps to an exit status or a response code without parsing what().
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace pa::keystore {

struct StoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A path whose owner or mode breaks SPEC section 5's rules. what() is the one-line message
// "<description><path> <problem>; fix: <fix>"; the parts are there for callers that show them
// apart (`provision-agent check`).
class PermissionError : public StoreError {
 public:
  PermissionError(std::filesystem::path path, std::string problem, std::string fix,
                  std::string_view description = {});

  const std::filesystem::path& path() const noexcept { return path_; }
  // What is wrong, e.g. "is world-writable (mode 0777)".
  const std::string& problem() const noexcept { return problem_; }
  // The shell command that fixes it, e.g. "chmod 700 /var/lib/provision-agent/sensor_keys".
  const std::string& fix() const noexcept { return fix_; }

 private:
  std::filesystem::path path_;
  std::string problem_;
  std::string fix_;
};

// The key group (PROVISION_KEY_GROUP) does not exist, or the process may not give files to it.
// A configuration error: the agent exits 78.
struct GroupError : StoreError {
  using StoreError::StoreError;
};

// SPEC section 3.5: a legacy device folder <root>/<D>/ and a user folder <root>/<U>/ would be the
// same folder. Nothing was written. The agent answers `storage_failed`.
struct CollisionError : StoreError {
  using StoreError::StoreError;
};

// SPEC section 2: storing one more pair would exceed max_devices. Nothing was written. The agent
// answers `quota_exceeded`.
class QuotaError : public StoreError {
 public:
  QuotaError(std::size_t held, std::size_t limit);
  std::size_t held() const noexcept { return held_; }
  std::size_t limit() const noexcept { return limit_; }

 private:
  std::size_t held_;
  std::size_t limit_;
};

// Another process holds the instance lock of a folder (SPEC section 5). what() is
// "another provision-agent (PID 1234) is using <folder>" (without "(PID n)" when the holder had
// not written it yet); the agent prints it and exits 1.
class InstanceLockedError : public StoreError {
 public:
  InstanceLockedError(std::filesystem::path folder, pid_t holder);
  const std::filesystem::path& folder() const noexcept { return folder_; }
  // The holder's PID as it wrote it into the lock file; 0 when unknown.
  pid_t holder() const noexcept { return holder_; }

 private:
  std::filesystem::path folder_;
  pid_t holder_;
};

}  // namespace pa::keystore
