// pa_bench decrypt [runs]: time to open one envelope (SPEC section 4) with an RSA-2048 key, as
// the agent does per key it tries: parse the private key PEM, RSA-OAEP-unwrap the session key,
// AES-EAX/GCM decrypt and verify the tag. Prints p10 / median / p90 of N runs (default 200).
#include <fmt/format.h>

#include <cstdlib>
#include <string>

#include "bench.hpp"
#include "intake/envelope.hpp"
#include "keystore/key_pair.hpp"

namespace pa::bench {

int run_decrypt(int runs) {
  const auto pair = pa::keystore::generate_key_pair(pa::keystore::KeyType::rsa2048);
  const auto other = pa::keystore::generate_key_pair(pa::keystore::KeyType::rsa2048);
  const std::string request =
      R"({"device_id":"pH01","action":"update","user_id":"42","request_id":"bench-1","ts":1795000000})";

  fmt::print("== decrypt (load average {})\n", load_average());
  fmt::print("open one envelope with an RSA-2048 key, {} runs each (ms: p10 / median / p90)\n",
             runs);
  for (const char* mode : {"EAX", "GCM"}) {
    for (std::size_t key_size : {16u, 32u}) {
      pa::e2ee::SealOptions options;
      options.mode = mode;
      options.key_size = key_size;
      const pa::Envelope envelope = pa::e2ee::seal_envelope(request, pair.public_pem, options);
      const Figures f = summarize(time_runs(runs, [&] {
        if (!pa::e2ee::open_envelope(envelope, pair.private_pem)) std::abort();
      }));
      fmt::print("  {} {}-byte key, right key:  {:.3f} / {:.3f} / {:.3f}\n", mode, key_size, f.p10,
                 f.median, f.p90);
    }
  }
  // A key that is tried and fails (another device folder's key before the right one).
  const pa::Envelope envelope = pa::e2ee::seal_envelope(request, pair.public_pem);
  const Figures wrong = summarize(time_runs(runs, [&] {
    if (pa::e2ee::open_envelope(envelope, other.private_pem)) std::abort();
  }));
  fmt::print("  EAX 32-byte key, wrong key:  {:.3f} / {:.3f} / {:.3f}\n", wrong.p10, wrong.median,
             wrong.p90);
  fmt::print("(load average after: {})\n", load_average());
  return 0;
}

}  // namespace pa::bench
