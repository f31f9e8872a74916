#pragma once
// One agent at a time (SPEC section 5): an exclusive flock on `.provision-agent.lock` in a folder
// (the key store root, the state folder), held for the life of the object. The holder's PID is
// written into the file so that a second agent can name it.
#include <filesystem>

#include "errors.hpp"
#include "file_names.hpp"
#include "file_util.hpp"

namespace pa::keystore {

class InstanceLock {
 public:
  // Locks <folder>/.provision-agent.lock: opened with O_NOFOLLOW|O_CLOEXEC (created 0600), locked
  // with flock(LOCK_EX|LOCK_NB), then our PID is written into it. Throws InstanceLockedError
  // (with the holder's PID) when another open of the file holds the lock, even one in this
  // process; StoreError when the file cannot be opened (a symlink in its place is refused).
  explicit InstanceLock(const std::filesystem::path& folder);
  // The same in an open folder; `folder` names it in messages (KeyStore::lock_instance).
  InstanceLock(int folder_fd, std::filesystem::path folder);

  InstanceLock(InstanceLock&&) noexcept = default;
  InstanceLock& operator=(InstanceLock&&) noexcept = default;
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  // Empties the file (so a stale PID is never reported) and releases the lock. The file stays:
  // removing it would let two agents lock two different files of the same name.
  ~InstanceLock();

  // The locked folder.
  const std::filesystem::path& folder() const noexcept { return folder_; }

 private:
  std::filesystem::path folder_;
  UniqueFd fd_;
};

}  // namespace pa::keystore
