#pragma once
// How `check` and `keys` word what they find: one "OK   <what>" or
// "FAIL <what>: <why>; fix: <command>" line each, and the key store's problem kinds
// (keystore/inspect.hpp) as a reason and the command that fixes it.
#include <sys/types.h>

#include <cstdio>
#include <string>
#include <vector>

#include "keystore/inspect.hpp"

namespace pa::cli {

class Findings {
 public:
  explicit Findings(std::FILE* out) : out_(out) {}
  void ok(const std::string& what);
  void fail(const std::string& what, const std::string& why, const std::string& fix);
  int failures() const { return failures_; }

 private:
  std::FILE* out_;
  int failures_ = 0;
};

// A problem as an operator reads it.
struct Wording {
  std::string why;
  std::string fix;
};
Wording word(const keystore::DeviceReport& device, const keystore::KeyProblem& problem);
Wording word(const keystore::RootProblem& problem);

// Every problem of `kind` once (a loose user folder is shared by its devices), in store order,
// each with its wording.
struct WordedProblem {
  std::string path;
  Wording wording;
};
std::vector<WordedProblem> distinct_problems(const std::vector<keystore::DeviceReport>& devices,
                                             bool about_access);

// "key store root /x (mode 0700, owner agent)", or that it does not exist yet.
std::string root_summary(const std::filesystem::path& root);
// "3 devices", "1 device".
std::string count_devices(std::size_t count);
// A user's name, its number when it has none.
std::string user_name(uid_t uid);
// "0600", or "----" for a missing file.
std::string mode_text(const keystore::FileFacts& file);

}  // namespace pa::cli
