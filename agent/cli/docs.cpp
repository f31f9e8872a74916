// `provision-agent docs`: agent.env, the README's tables and the list of generated files, from the
// configuration table and the command table (the manual pages are in manual.cpp, the completion
// in completion.cpp).
#include "cli/docs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace pa::cli {
namespace {

// Words of `text` wrapped into lines of at most `width` characters, each starting with `prefix`.
std::string wrap(const std::string& text, const std::string& prefix, std::size_t width = 100) {
  std::string out;
  std::string line = prefix;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t space = text.find(' ', at);
    const std::string word =
        text.substr(at, space == std::string::npos ? std::string::npos : space - at);
    at = space == std::string::npos ? text.size() : space + 1;
    if (word.empty()) continue;
    if (line.size() > prefix.size() && line.size() + 1 + word.size() > width) {
      out += line + "\n";
      line = prefix;
    }
    if (line.size() > prefix.size()) line += ' ';
    line += word;
  }
  if (line.size() > prefix.size()) out += line + "\n";
  return out;
}

// "broker host" -> "Broker host"; a first word with other than letters stays as it is
// ("mqtt://host").
std::string sentence_start(std::string text) {
  const std::size_t end = text.find(' ');
  const std::string first = text.substr(0, end);
  const bool word = !first.empty() && std::all_of(first.begin(), first.end(), [](unsigned char c) {
    return std::islower(c) != 0 || c == '\'';
  });
  if (word) text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
  return text;
}

std::string markdown_cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

bool is_visible(const CLI::App* app) {
  return !app->get_group().empty();
}

}  // namespace

bool is_flag(const CLI::Option& option) {
  return option.get_items_expected_max() == 0;
}

std::string value_placeholder(const CLI::Option& option) {
  const std::string type = option.get_type_name();
  return type.substr(0, type.find(':'));
}

std::string usage(const CLI::App& app, const std::string& path) {
  std::string text = path;
  std::vector<std::string> options;
  for (const CLI::Option* option : app.get_options()) {
    if (option == app.get_help_ptr() || option->get_group() != "Options") continue;
    if (!option->nonpositional()) {
      text += ' ' + option->get_name(true);
      if (option->get_items_expected_max() > 1) text += "...";
      continue;
    }
    const std::string name =
        option->get_lnames().empty() ? option->get_name() : "--" + option->get_lnames().front();
    options.push_back(is_flag(*option) ? fmt::format("[{}]", name)
                                       : fmt::format("[{} {}]", name, value_placeholder(*option)));
  }
  for (const std::string& option : options) text += ' ' + option;
  return text;
}

std::vector<GeneratedFile> generated_files(const CommandLine& line) {
  std::vector<GeneratedFile> files = {
      {"agent-env", "", "systemd/agent.env", false},
      {"config-table", "", "README.md", true},
      {"commands-table", "", "README.md", true},
      {"man", "provision-agent", "packaging/man/provision-agent.1", false},
  };
  for (const CommandLine::Entry& entry : line.subcommands) {
    if (entry.spec->hidden) continue;
    const std::string page = std::string("provision-agent-") + entry.spec->name;
    files.push_back({"man", page, "packaging/man/" + page + ".1", false});
  }
  files.push_back({"completion", "", "packaging/bash-completion/provision-agent", false});
  return files;
}

std::string agent_env() {
  std::string out =
      "# /etc/provision-agent/agent.env: settings of provision-agent.service (systemd "
      "EnvironmentFile).\n"
      "# KEY=VALUE per line, optional quotes, # comments. Every line below shows a variable "
      "commented out\n"
      "# with its built-in default; uncomment and change what you need, then\n"
      "#   sudo systemctl restart provision-agent\n"
      "# `provision-agent config --env-file /etc/provision-agent/agent.env` prints the effective "
      "values\n"
      "# (secrets masked) and `provision-agent check --env-file /etc/provision-agent/agent.env` "
      "tests them.\n"
      "# It may hold the broker password: keep it 0600 root:root (systemd reads it before the "
      "service\n"
      "# drops to its own user), or better, use MQTT_PASSWORD_FILE below.\n";
  for (ConfigSection section : kConfigSections) {
    out += fmt::format("\n## {}\n", to_string(section));
    for (const ConfigVariable& row : config_variables()) {
      if (row.section != section) continue;
      const std::string range = row.range_text();
      std::string text = sentence_start(row.help);
      if (!range.empty()) text += " (" + range + ")";
      text += '.';
      if (*row.note) text += std::string(" ") + row.note;
      if (row.default_note) text += fmt::format(" Default: {}.", row.default_note);
      out += wrap(text, "# ");
      if (row.package_value)
        out += fmt::format("{}={}\n", row.env, row.package_value);
      else
        out += fmt::format("#{}={}\n", row.env, row.default_value);
    }
  }
  return out;
}

std::string config_table() {
  std::string out =
      "| variable | flag | default | meaning |\n"
      "|---|---|---|---|\n";
  for (const ConfigVariable& row : config_variables()) {
    std::string default_text = row.default_text();
    if (row.package_value)
      default_text += fmt::format(" (the package's agent.env: `{}`)", row.package_value);
    const std::string range = row.range_text();
    const std::string meaning = range.empty() ? row.help : fmt::format("{} ({})", row.help, range);
    out += fmt::format("| `{}` | `{}` | {} | {} |\n", row.env, row.flag,
                       markdown_cell(default_text), markdown_cell(meaning));
  }
  return out;
}

std::string commands_table(const CommandLine& line) {
  std::string out =
      "| command | what it does |\n"
      "|---|---|\n";
  for (const CommandLine::Entry& entry : line.subcommands) {
    if (entry.spec->hidden) continue;
    const std::string path = std::string("provision-agent ") + entry.spec->name;
    const auto nested = entry.app->get_subcommands(is_visible);
    if (nested.empty()) {
      out += fmt::format("| `{}` | {} |\n", markdown_cell(usage(*entry.app, path)),
                         markdown_cell(entry.spec->summary));
      continue;
    }
    for (const CLI::App* sub : nested)
      out +=
          fmt::format("| `{}` | {} |\n", markdown_cell(usage(*sub, path + " " + sub->get_name())),
                      markdown_cell(sub->get_description()));
  }
  return out;
}

namespace {

class DocsCommand : public Command {
 public:
  void define(CLI::App& app) override {
    app.add_option("WHAT", what_,
                   "agent-env, config-table, commands-table, man, completion or list")
        ->required();
    app.add_option("PAGE", page_, "with man: the page (provision-agent, provision-agent-check)");
  }

  int run(const ConfigInputs&) override {
    const CommandLine line;  // the definitions as --help knows them, not as parsed
    std::string text;
    if (what_ == "agent-env") {
      text = agent_env();
    } else if (what_ == "config-table") {
      text = config_table();
    } else if (what_ == "commands-table") {
      text = commands_table(line);
    } else if (what_ == "man") {
      text = manual_page(line, page_.empty() ? "provision-agent" : page_);
    } else if (what_ == "completion") {
      text = bash_completion(line);
    } else if (what_ == "list") {
      for (const GeneratedFile& file : generated_files(line))
        text += fmt::format("{} {} {}\n", file.kind, file.argument.empty() ? "-" : file.argument,
                            file.path);
    } else {
      std::fprintf(stderr, "provision-agent docs: unknown \"%s\"\n", what_.c_str());
      return kExitConfig;
    }
    if (text.empty()) {
      std::fprintf(stderr, "provision-agent docs: no manual page \"%s\"\n", page_.c_str());
      return kExitConfig;
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }

 private:
  std::string what_;
  std::string page_;
};

}  // namespace

std::unique_ptr<Command> make_docs_command() {
  return std::make_unique<DocsCommand>();
}

}  // namespace pa::cli
