#pragma once
// The command line (SPEC section 7) as one table of subcommands: each row names a subcommand,
// says what it does in one line and for its manual page, and makes the object that defines its
// options and runs it. --help, the manual pages and the shell completion read the table and the
// CLI11 definitions it makes; a new subcommand is its file and one row in commands.cpp.
#include <CLI/CLI.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace pa::cli {

// One subcommand: its options (define) and what it does (run).
class Command {
 public:
  virtual ~Command() = default;
  // Adds the subcommand's own options, positionals and nested subcommands to `app`.
  virtual void define(CLI::App& app) = 0;
  // After parsing, when `app` (the one given to define) was chosen. `inputs` are the
  // configuration sources of the command line. Returns the exit status.
  virtual int run(const ConfigInputs& inputs) = 0;
};

struct CommandSpec {
  const char* name;     // "check"
  const char* summary;  // one line: --help and the manual's NAME
  // The manual page's DESCRIPTION: paragraphs separated by blank lines; a line starting with
  // "  " is shown as is (a command or an example).
  const char* description;
  const char* exit_status;        // the manual's EXIT STATUS
  bool full_environment = false;  // the manual lists every variable (else points to the main page)
  bool hidden = false;            // internal: not in --help, no manual page, no completion
  std::unique_ptr<Command> (*make)();
};

// Every subcommand, in the order --help and the manual list them. The first is the default.
const std::vector<CommandSpec>& commands();

// The configuration flags (one per row of the configuration table) and --env-file, shared by
// every subcommand.
class ConfigFlags {
 public:
  void define(CLI::App& app);
  ConfigInputs inputs() const;

 private:
  std::map<std::string, std::string> values_;  // by variable name
  std::map<std::string, CLI::Option*> options_;
  std::string env_file_;
  CLI::Option* env_file_option_ = nullptr;
};

// The whole command line: the main app with the configuration flags and one subcommand per row.
struct CommandLine {
  CLI::App app{"provision-agent: generates sensor key pairs on request over MQTT",
               "provision-agent"};
  ConfigFlags flags;
  struct Entry {
    const CommandSpec* spec;
    CLI::App* app;
    std::unique_ptr<Command> command;
  };
  std::vector<Entry> subcommands;

  CommandLine();
  // The chosen subcommand's exit status; the first row's when none was named.
  int run();
};

// The --help line of a configuration flag, from its row.
std::string flag_help(const ConfigVariable& row);
// The placeholder of a configuration flag's value in --help and the manual: "INT", "PATH".
const char* config_value_name(const ConfigVariable& row);

// A subcommand's factories (one per file).
std::unique_ptr<Command> make_run_command();
std::unique_ptr<Command> make_config_command();
std::unique_ptr<Command> make_plugins_command();
std::unique_ptr<Command> make_check_command();
std::unique_ptr<Command> make_keys_command();
std::unique_ptr<Command> make_send_command();
std::unique_ptr<Command> make_audit_command();
std::unique_ptr<Command> make_docs_command();

}  // namespace pa::cli
