// Bash completion from the command table, the CLI11 definitions and the configuration table:
// subcommands by level, each level's options plus the configuration flags, and the values of an
// option (file names for paths, the words of a choice, true/false for a boolean).
#include <fmt/format.h>

#include <map>

#include "cli/docs.hpp"

namespace pa::cli {
namespace {

struct Level {
  std::string path;  // "" for the program, "keys show" for a nested subcommand
  const CLI::App* app;
};

bool is_visible(const CLI::App* app) {
  return !app->get_group().empty();
}

void collect(const CLI::App& app, const std::string& path, std::vector<Level>& levels) {
  levels.push_back({path, &app});
  for (const CLI::App* sub : app.get_subcommands(is_visible))
    collect(*sub, path.empty() ? sub->get_name() : path + " " + sub->get_name(), levels);
}

std::string join(const std::vector<std::string>& words) {
  return fmt::format("{}", fmt::join(words, " "));
}

// What follows an option: "none", "file", "optional true false", "words A B", "any".
std::string value_of(const CLI::Option& option) {
  if (is_flag(option)) return "none";
  const std::string type = value_placeholder(option);
  if (type == "PATH" || type.find(".pem") != std::string::npos) return "file";
  if (type.find('|') != std::string::npos) {
    std::string words = type;
    for (char& c : words)
      if (c == '|') c = ' ';
    return "words " + words;
  }
  return "any";
}

std::string value_of(const ConfigVariable& row) {
  switch (row.kind) {
    case VariableKind::path:
      return "file";
    case VariableKind::boolean:
      return "optional true false";
    case VariableKind::choice: {
      std::vector<std::string> words;
      for (std::string_view name : row.choice_names()) words.emplace_back(name);
      return "words " + join(words);
    }
    default:
      return "any";
  }
}

std::string quoted_case(const std::string& path) {
  return path.empty() ? "\"\"" : "\"" + path + "\"";
}

}  // namespace

std::string bash_completion(const CommandLine& line) {
  std::vector<Level> levels;
  collect(line.app, "", levels);

  std::string subcommands, options;
  std::map<std::string, std::string> values;  // option name -> what follows it
  for (const Level& level : levels) {
    std::vector<std::string> names;
    for (const CLI::App* sub : level.app->get_subcommands(is_visible))
      names.push_back(sub->get_name());
    if (!names.empty())
      subcommands += fmt::format("    {}) echo \"{}\" ;;\n", quoted_case(level.path), join(names));
    std::vector<std::string> flags;
    for (const CLI::Option* option : level.app->get_options()) {
      if (!option->nonpositional() || option->get_group() != "Options") continue;
      for (const std::string& name : option->get_lnames()) {
        flags.push_back("--" + name);
        values["--" + name] = value_of(*option);
      }
      for (const std::string& name : option->get_snames()) flags.push_back("-" + name);
    }
    options += fmt::format("    {}) echo \"{}\" ;;\n", quoted_case(level.path), join(flags));
  }
  // --env-file and the configuration flags are accepted at every level (CLI11's fallthrough).
  std::vector<std::string> config_flags = {"--env-file"};
  for (const ConfigVariable& row : config_variables()) {
    config_flags.push_back(row.flag);
    values[row.flag] = value_of(row);
  }
  std::map<std::string, std::vector<std::string>> by_value;
  for (const auto& [option, value] : values) by_value[value].push_back(option);
  std::string value_cases;
  for (const auto& [value, names] : by_value)
    value_cases += fmt::format("    {}) echo \"{}\" ;;\n", fmt::join(names, " | "), value);

  return fmt::format(
      R"SH(# bash completion for provision-agent(1), generated from its command and configuration
# tables by `provision-agent docs completion`.

# The subcommands below the command path $1 ("" or "keys").
_provision_agent_subcommands() {{
  case $1 in
{}  esac
}}

# The options of the command path $1, beside the configuration flags.
_provision_agent_options() {{
  case $1 in
{}  esac
}}

_provision_agent_config_flags="{}"

# What follows option $1: none, file, "optional WORD...", "words WORD..." or any.
_provision_agent_value() {{
  case $1 in
{}    *) echo none ;;
  esac
}}

_provision_agent() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} prev="" path="" word kind i
  ((COMP_CWORD > 0)) && prev=${{COMP_WORDS[COMP_CWORD - 1]}}
  # The command path so far, skipping options and the values they take.
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=${{COMP_WORDS[i]}}
    if [[ $word == -* ]]; then
      kind=$(_provision_agent_value "$word")
      [[ $kind == none || $kind == optional* ]] || ((i++))
    elif [[ " $(_provision_agent_subcommands "$path") " == *" $word "* ]]; then
      path=${{path:+$path }}$word
    fi
  done
  if [[ $prev == -* ]]; then
    kind=$(_provision_agent_value "$prev")
    case $kind in
      file)
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return
        ;;
      words\ *)
        mapfile -t COMPREPLY < <(compgen -W "${{kind#words }}" -- "$cur")
        return
        ;;
      optional\ *)
        if [[ $cur != -* ]]; then
          mapfile -t COMPREPLY < <(compgen -W "${{kind#optional }}" -- "$cur")
          return
        fi
        ;;
      any) return ;;
    esac
  fi
  if [[ $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$(_provision_agent_options "$path") $_provision_agent_config_flags" -- "$cur")
  else
    mapfile -t COMPREPLY < <(compgen -W "$(_provision_agent_subcommands "$path")" -- "$cur")
  fi
}}

complete -F _provision_agent provision-agent
)SH",
      subcommands, options, join(config_flags), value_cases);
}

}  // namespace pa::cli
