// Time to open one envelope (SPEC section 4) with an RSA-2048 key, as the agent does per key it
// tries: parse the private key PEM, RSA-OAEP-unwrap the session key, AES-EAX/GCM decrypt and
// verify the tag. Prints the median (and p10/p90) of N runs, each timed with std::chrono.
//   pa_bench [runs]   (default 200)
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "envelope.hpp"
#include "keystore/key_pair.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Figures {
  double p10, median, p90;
};

template <class Work>
Figures measure(int runs, Work work) {
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(runs));
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    work();
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[static_cast<std::size_t>(q * (ms.size() - 1))]; };
  return {at(0.10), at(0.50), at(0.90)};
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 200;
  const auto pair = pa::keystore::generate_key_pair(pa::keystore::KeyType::rsa2048);
  const auto other = pa::keystore::generate_key_pair(pa::keystore::KeyType::rsa2048);
  const std::string request =
      R"({"device_id":"pH01","action":"update","user_id":"42","request_id":"bench-1","ts":1795000000})";

  fmt::print("open one envelope with an RSA-2048 key, {} runs each (ms: p10 / median / p90)\n",
             runs);
  for (const char* mode : {"EAX", "GCM"}) {
    for (std::size_t key_size : {16u, 32u}) {
      pa::e2ee::SealOptions options;
      options.mode = mode;
      options.key_size = key_size;
      const pa::Envelope envelope = pa::e2ee::seal_envelope(request, pair.public_pem, options);
      const Figures f = measure(runs, [&] {
        if (!pa::e2ee::open_envelope(envelope, pair.private_pem)) std::abort();
      });
      fmt::print("  {} {}-byte key, right key:  {:.3f} / {:.3f} / {:.3f}\n", mode, key_size, f.p10,
                 f.median, f.p90);
    }
  }
  // A key that is tried and fails (another device folder's key before the right one).
  const pa::Envelope envelope = pa::e2ee::seal_envelope(request, pair.public_pem);
  const Figures wrong = measure(runs, [&] {
    if (pa::e2ee::open_envelope(envelope, other.private_pem)) std::abort();
  });
  fmt::print("  EAX 32-byte key, wrong key:  {:.3f} / {:.3f} / {:.3f}\n", wrong.p10, wrong.median,
             wrong.p90);
  return 0;
}
