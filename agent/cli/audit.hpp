#pragma once
// `provision-agent audit verify [--checkpoint FILE] [--public-key PEM]` (SPEC sections 5 and 7):
// checks the audit log in the state folder without a broker.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "config/config.hpp"

namespace pa {

struct AuditCommand {
  CLI::App* verify = nullptr;
  std::string checkpoint_file;
  CLI::Option* checkpoint = nullptr;
  std::string public_key_file;
  CLI::Option* public_key = nullptr;
};

// Adds `audit verify` to `app`; `command` receives the parsed options and must outlive parsing.
void add_audit_command(CLI::App& app, AuditCommand& command);

// Prints one line per finding on `out`: "OK   ..." for an intact log (and a matching checkpoint),
// "NOTE ..." for each sealed tear, "FAIL seq N (<file> line L): <what>: <why>" naming the first
// entry that was changed, removed, reordered, torn or truncated away. The checkpoint (a retained
// P/agents/<id>/audit message saved to FILE) must be in the log and signed by the agent key
// (the one the agent uses, or --public-key). Returns 0 when intact, 1 otherwise.
int run_audit_verify(const Config& config, const AuditCommand& command, std::FILE* out);

}  // namespace pa
