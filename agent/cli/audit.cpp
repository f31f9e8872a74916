#include <fmt/format.h>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "audit/format.hpp"
#include "audit/verify.hpp"
#include "cli/command.hpp"
#include "intake/agent_key.hpp"
#include "keystore/file_util.hpp"
#include "keystore/key_pair.hpp"
#include "keystore/permissions.hpp"

namespace pa::cli {
namespace {

namespace fs = std::filesystem;

struct AuditOptions {
  CLI::App* verify = nullptr;
  std::string checkpoint_file;
  CLI::Option* checkpoint = nullptr;
  std::string public_key_file;
  CLI::Option* public_key = nullptr;
};

// The public half of the key that signs checkpoints: --public-key, else the agent key found as
// the agent finds it (SPEC section 4), never generated here: without one, nothing signed.
std::string checkpoint_key(const Config& config, const AuditOptions& command) {
  if (command.public_key->count() > 0) return keystore::read_file(command.public_key_file);
  std::optional<gid_t> key_group;
  if (config.key_group) key_group = keystore::resolve_group(*config.key_group);
  const std::optional<AgentKey> key = find_agent_key(config, key_group);
  if (!key)
    throw std::runtime_error(fmt::format(
        "there is no agent key in {} to check the checkpoint's signature with; give the agent's "
        "public key with --public-key",
        config.state_dir));
  return key->public_pem;
}

void print(std::FILE* out, const std::string& line) {
  std::fprintf(out, "%s\n", line.c_str());
}

// One line per finding: "OK   ..." for an intact log (and a matching checkpoint), "NOTE ..." for
// each sealed tear, "FAIL seq N (<file> line L): <what>: <why>" naming the first entry that was
// changed, removed, reordered, torn or truncated away. Returns 0 when intact, 1 otherwise.
int verify_audit_log(const Config& config, const AuditOptions& command, std::FILE* out) {
  const fs::path folder = config.state_dir;
  // Oldest first: audit.log.4 ... audit.log.1, audit.log.
  std::vector<std::string> names;
  std::vector<std::string> contents;
  for (int generation = audit::kGenerations; generation >= 0; --generation) {
    const fs::path path = folder / audit::generation_file(generation);
    std::error_code ec;
    if (!fs::exists(path, ec)) continue;
    try {
      contents.push_back(keystore::read_file(path));
    } catch (const std::exception& error) {
      print(out, fmt::format("FAIL cannot read {}: {}", path.string(), error.what()));
      return 1;
    }
    names.push_back(audit::generation_file(generation));
  }
  audit::VerifyOptions options;
  std::error_code ec;
  options.may_begin_later = fs::exists(folder / audit::generation_file(audit::kGenerations), ec);

  std::optional<audit::Checkpoint> checkpoint;
  if (command.checkpoint->count() > 0) {
    std::string why;
    try {
      checkpoint = audit::parse_checkpoint(keystore::read_file(command.checkpoint_file), &why);
      if (checkpoint) {
        const std::string public_pem = checkpoint_key(config, command);
        if (!audit::verify_checkpoint_signature(*checkpoint, public_pem, &why)) {
          print(out, fmt::format("FAIL checkpoint {}: its signature does not verify: {}",
                                 command.checkpoint_file, why));
          return 1;
        }
        print(out, fmt::format("OK   checkpoint seq {}: signed by the agent key {}",
                               checkpoint->head.seq, keystore::fingerprint(public_pem)));
      }
    } catch (const std::exception& error) {
      why = error.what();
    }
    if (!checkpoint || !why.empty()) {
      print(out, fmt::format("FAIL checkpoint {}: {}", command.checkpoint_file, why));
      return 1;
    }
    options.checkpoint = checkpoint->head;
  }

  const std::vector<std::string_view> views(contents.begin(), contents.end());
  const audit::Report report = audit::verify_audit(views, options);
  auto where = [&](std::size_t file, std::size_t line) {
    if (names.empty()) return fmt::format("no audit log in {}", folder.string());
    if (line == 0) return fmt::format("after the end of {}", names[file]);
    return fmt::format("{} line {}", names[file], line);
  };
  for (const audit::SealedTear& seal : report.seals)
    print(out, fmt::format("NOTE seq {} ({}) seals a torn entry: {} bytes of an append cut short "
                           "by a crash were cut off when the agent started",
                           seal.seq, where(seal.file, seal.line), seal.cut_bytes));
  if (!report.intact()) {
    // seq 0: the log may begin anywhere and its first line is unreadable.
    print(out, fmt::format("FAIL {} ({}): {}: {}",
                           report.seq ? fmt::format("seq {}", report.seq) : "the first entry",
                           where(report.file, report.line), audit::to_string(report.problem),
                           report.detail));
    return 1;
  }
  if (report.entries == 0)
    print(out, fmt::format("OK   the audit log in {} holds no entries yet", folder.string()));
  else
    print(out, fmt::format("OK   {} entries, seq {} to {}, chained and intact; head {}",
                           report.entries, report.first_seq, report.last.seq, report.last.hash));
  if (checkpoint) {
    if (report.checkpoint_checked)
      print(out, fmt::format("OK   checkpoint seq {} matches the log", checkpoint->head.seq));
    else
      print(out, fmt::format("NOTE {}", report.checkpoint_note));
  }
  return 0;
}

class AuditCommand : public Command {
 public:
  void define(CLI::App& app) override {
    app.require_subcommand(1);
    options_.verify = app.add_subcommand(
        "verify",
        "check the audit log's hash chain (and a checkpoint); name the first entry changed, "
        "removed, reordered or truncated away; exit 1 unless intact");
    auto file_option = [&](const char* name, std::string& file, const char* type,
                           const char* help) {
      return options_.verify->add_option(name, file, help)->type_name(type);
    };
    options_.checkpoint = file_option(
        "--checkpoint", options_.checkpoint_file, "FILE",
        "a checkpoint message saved from P/agents/<client id>/audit: the log must hold its seq "
        "with its hash, and its signature must verify");
    options_.public_key = file_option(
        "--public-key", options_.public_key_file, "PEM",
        "the agent's public key PEM to check the checkpoint's signature with (default: the agent "
        "key in use)");
    options_.verify->fallthrough();
  }

  int run(const ConfigInputs& inputs) override {
    return verify_audit_log(load_config(inputs), options_, stdout);
  }

 private:
  AuditOptions options_;
};

}  // namespace

std::unique_ptr<Command> make_audit_command() {
  return std::make_unique<AuditCommand>();
}

}  // namespace pa::cli
