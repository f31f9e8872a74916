// pa_bench keygen [runs]: key generation (SPEC section 10). RSA-2048 through
// pa::keystore::generate_key_pair (Crypto++) against `openssl genpkey` in the same run, the two
// interleaved run by run so that a change in the machine's load hits both alike; `openssl
// version` is timed too, so the part of openssl's figure that is only process start shows.
// Then ec-p256 and ed25519 (fast, so more runs).
#include <fmt/format.h>

#include <cryptopp/cryptlib.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench.hpp"
#include "keystore/key_pair.hpp"
#include "test_support.hpp"

extern char** environ;

namespace pa::bench {
namespace {

using keystore::KeyType;

// Runs a command by fork/exec (posix_spawn) with stdout on /dev/null and waits for it; throws
// unless it exits 0. stderr stays ours, so a failing openssl says why.
void run_quietly(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw std::runtime_error(fmt::format("cannot run {}: {}", argv[0], std::strerror(rc)));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(fmt::format("waitpid: {}", std::strerror(errno)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(
        fmt::format("{} failed (wait status {})", fmt::join(argv, " "), status));
}

void print_line(const std::string& label, const Figures& f) {
  fmt::print("  {:<44} {:8.3f} / {:8.3f} / {:8.3f}   (min {:.3f}, max {:.3f})\n", label, f.p10,
             f.median, f.p90, f.min, f.max);
}

}  // namespace

int run_keygen(int runs) {
  const std::vector<std::string> genpkey = {
      "openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-quiet"};
  const std::vector<std::string> version = {"openssl", "version"};
  std::string openssl = test::run_command("openssl version").output;
  while (!openssl.empty() && openssl.back() == '\n') openssl.pop_back();

  fmt::print("== keygen (load average {})\n", load_average());
  fmt::print("RSA-2048 key generation, {} runs of each, interleaved (ms: p10 / median / p90)\n",
             runs);
  // One of each first, untimed: page in the libraries and the openssl binary.
  keystore::generate_key_pair(KeyType::rsa2048);
  run_quietly(genpkey);

  std::vector<double> ours, theirs, start_only;
  for (int i = 0; i < runs; ++i) {
    auto start = Clock::now();
    keystore::generate_key_pair(KeyType::rsa2048);
    ours.push_back(ms_between(start, Clock::now()));
    start = Clock::now();
    run_quietly(genpkey);
    theirs.push_back(ms_between(start, Clock::now()));
    start = Clock::now();
    run_quietly(version);
    start_only.push_back(ms_between(start, Clock::now()));
  }
  const Figures pa_rsa = summarize(ours);
  const Figures openssl_rsa = summarize(theirs);
  const Figures spawn = summarize(start_only);
  print_line(fmt::format("generate_key_pair (Crypto++ {}.{}.{})", CRYPTOPP_MAJOR, CRYPTOPP_MINOR,
                         CRYPTOPP_REVISION),
             pa_rsa);
  print_line("openssl genpkey, own process", openssl_rsa);
  print_line("openssl version (process start alone)", spawn);
  fmt::print("  ({})\n", openssl);
  const double net = openssl_rsa.median - spawn.median;
  fmt::print("  ratio of medians, ours / openssl genpkey: {:.2f}",
             pa_rsa.median / openssl_rsa.median);
  if (net > 0) fmt::print(" ({:.2f} against openssl less its process start)", pa_rsa.median / net);
  fmt::print("\n");
  fmt::print("  (an RSA key pair takes as long as its random prime search: compare medians)\n");

  const int fast_runs = std::max(runs, 100);
  fmt::print("other key types, generate_key_pair, {} runs each (ms: p10 / median / p90)\n",
             fast_runs);
  for (KeyType type : {KeyType::ec_p256, KeyType::ed25519}) {
    keystore::generate_key_pair(type);
    print_line(std::string(keystore::to_string(type)),
               summarize(time_runs(fast_runs, [&] { keystore::generate_key_pair(type); })));
  }
  fmt::print("(load average after: {})\n", load_average());
  return 0;
}

}  // namespace pa::bench
