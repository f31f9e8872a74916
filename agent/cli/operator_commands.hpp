#pragma once
// Operator commands that need no running daemon (SPEC section 7): `check`, which tells an
// operator everything worth knowing before starting the service, and `keys list/show/verify`,
// which inspect the key store read-only, without a broker.
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include "config/config.hpp"

namespace pa {

// `provision-agent check`: one "OK   <what>" or "FAIL <what>: <why>; fix: <command>" line on
// `out` per check: configuration valid, broker reachable with the configured credentials and TLS
// (within `broker_timeout`), key store modes and ownership, key pairs consistent, plugins load,
// system clock plausible. Returns 1 when any check failed, else 0.
int run_check(const ConfigInputs& inputs, std::FILE* out,
              std::chrono::milliseconds broker_timeout = std::chrono::seconds(5));

// `keys list`: one line per device in the store: user, device, key type, fingerprint, modes
// (folder/private/public) and status (ok, corrupt, missing-private, mismatch, wrong-owner,
// loose-mode). Returns 0, or 1 when the store cannot be read.
int run_keys_list(const Config& config, std::FILE* out);

// `keys show DEVICE [--user U]`: type, fingerprint, public key PEM, paths and modes, backup and
// problems of the device's keys (every user's when `user` is not given). Returns 1 when the
// device has no keys.
int run_keys_show(const Config& config, const std::string& device,
                  const std::optional<std::string>& user, std::FILE* out);

// `keys verify`: every key pair parses and matches, every mode and owner is right. Prints an OK
// line per sound device and a FAIL line with the path and the fix per problem; repairs nothing.
// Returns 1 when there is any problem.
int run_keys_verify(const Config& config, std::FILE* out);

}  // namespace pa
