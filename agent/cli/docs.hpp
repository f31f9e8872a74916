#pragma once
// Documentation generated from the configuration table and the command table, so that it cannot
// drift from the code: systemd/agent.env, the README's tables, the manual pages and the bash
// completion. `provision-agent docs` prints them; scripts/docs.sh writes them into the source
// tree, and the ctest docs_test fails when a committed file differs.
#include <string>
#include <vector>

#include "cli/command.hpp"

namespace pa::cli {

// One generated file: what `provision-agent docs <kind> [<argument>]` prints and where it is kept
// (relative to the source tree). A README part replaces the lines between the markers
// "<!-- <kind> -->" and "<!-- /<kind> -->" of that file.
struct GeneratedFile {
  std::string kind;      // "agent-env", "config-table", "commands-table", "man", "completion"
  std::string argument;  // the manual page's name for "man"; empty otherwise
  std::string path;      // "systemd/agent.env", "README.md", "packaging/man/provision-agent.1"
  bool readme_part = false;
};
std::vector<GeneratedFile> generated_files(const CommandLine& line);

// systemd/agent.env: every variable by section, commented out with its default, with its help and
// note; what the package sets (PROVISION_KEY_GROUP) uncommented.
std::string agent_env();
// The README's configuration table (Markdown).
std::string config_table();
// The README's table of operator commands (Markdown).
std::string commands_table(const CommandLine& line);
// A manual page in roff: "provision-agent" or "provision-agent-<subcommand>".
std::string manual_page(const CommandLine& line, const std::string& page);
// The bash completion script, for /usr/share/bash-completion/completions/provision-agent.
std::string bash_completion(const CommandLine& line);

// "broker host" -> "Broker host." (for the manual's summaries).
std::string sentence(std::string text);

// An option that takes no value (--encrypt-to-agent).
bool is_flag(const CLI::Option& option);
// What an option's value is called ("SECONDS"), without the validator CLI11 appends.
std::string value_placeholder(const CLI::Option& option);

// What a subcommand (or the program) is invoked with: "provision-agent keys show DEVICE [--user
// USER]"; configuration flags and --help left out.
std::string usage(const CLI::App& app, const std::string& path);

}  // namespace pa::cli
