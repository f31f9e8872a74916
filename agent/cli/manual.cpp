// Manual pages (section 1) in roff from the command table, the CLI11 definitions and the
// configuration table: provision-agent(1) and provision-agent-<subcommand>(1).
#include <fmt/format.h>

#include <sstream>

#include "cli/docs.hpp"

namespace pa::cli {
namespace {

constexpr const char* kProgram = "provision-agent";

constexpr const char* kDescription =
    "provision-agent runs on a Raspberry Pi and serves the sensor devices attached to it. It "
    "connects to an MQTT broker, subscribes to provisioning requests for those devices, decodes "
    "them (decrypting end-to-end encrypted ones), and has a handler plugin serve each action: "
    "the bundled plugins generate key pairs into a key store on local disk and publish the "
    "public key, so the server can store it. The private key never leaves the Pi.\n\n"
    "Without a command it runs the daemon (provision-agent run). The other commands are for "
    "operators; each has its own manual page.";

constexpr const char* kConfigurationSources =
    "Sources, strongest first: a command-line flag, the environment variable, the file given "
    "with --env-file (read by the rules of systemd's EnvironmentFile=), the broker-config JSON "
    "of MQTT_BROKER_CONFIG, the built-in default. An invalid value stops start-up with one line "
    "naming the variable and the value, and exit status 78. Booleans accept true/false, 1/0, "
    "yes/no and on/off. Every variable below also has the flag named in its entry, accepted "
    "before or after the command.";

constexpr const char* kFiles =
    "/etc/provision-agent/agent.env\n"
    "The service's settings (EnvironmentFile= of provision-agent.service): every variable with "
    "its default.\n\n"
    "/var/lib/provision-agent\n"
    "The service's state folder: the agent key, the intake spool and the ledger of requests; the "
    "key store is its sensor_keys folder unless PROVISION_KEYS_DIR or PROJECT_ROOT says "
    "otherwise.\n\n"
    "/usr/lib/<multiarch>/provision-agent/plugins\n"
    "The bundled handler plugins (PROVISION_PLUGIN_DIR).";

// Text made safe for roff: backslashes and minus signs escaped, no line starting with a
// control character, and long paths breakable.
std::string roff(const std::string& text) {
  std::string out;
  bool line_start = true;
  for (char c : text) {
    if (line_start && (c == '.' || c == '\'')) out += "\\&";
    line_start = c == '\n';
    if (c == '\\')
      out += "\\e";
    else if (c == '-')
      out += "\\-";
    else if (c == '/')
      out += "/\\:";  // a long path may break after a slash (\: is an invisible break point)
    else
      out += c;
  }
  return out;
}

// Paragraphs separated by blank lines; lines starting with two spaces are shown as they are.
std::string paragraphs(const std::string& text) {
  std::string out;
  std::istringstream in(text);
  std::string line;
  bool literal = false;
  bool paragraph_open = false;
  while (std::getline(in, line)) {
    if (line.empty()) {
      if (literal) out += ".fi\n.RE\n";
      literal = false;
      paragraph_open = false;
      continue;
    }
    if (line.rfind("  ", 0) == 0) {
      if (!literal) out += ".PP\n.RS 4\n.nf\n";
      literal = true;
      out += roff(line.substr(2)) + "\n";
      continue;
    }
    if (!paragraph_open) out += ".PP\n";
    paragraph_open = true;
    out += roff(line) + "\n";
  }
  if (literal) out += ".fi\n.RE\n";
  return out;
}

std::string header(const std::string& page, const std::string& summary) {
  std::string upper;
  for (char c : page) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // Left-adjusted and not hyphenated: option names and paths are copied from here.
  return fmt::format(".TH {} 1 \"\" \"{} {}\" \"User Commands\"\n.ad l\n.nh\n.SH NAME\n{} \\- {}\n",
                     roff(upper), kProgram, PA_VERSION, roff(page), roff(summary));
}

// "provision-agent keys show DEVICE [--user USER]" in roff: the command bold, placeholders
// italic.
std::string synopsis_line(const std::string& usage_text, std::size_t command_words) {
  std::istringstream in(usage_text);
  std::string word;
  std::string out;
  std::size_t index = 0;
  while (in >> word) {
    if (!out.empty()) out += ' ';
    if (index++ < command_words) {
      out += "\\fB" + roff(word) + "\\fR";
    } else if (word.front() == '[' && word.rfind("[--", 0) == 0) {
      const bool closes = word.back() == ']';
      out += "[\\fB" + roff(closes ? word.substr(1, word.size() - 2) : word.substr(1)) + "\\fR" +
             (closes ? "]" : "");
    } else if (word.back() == ']') {
      out += "\\fI" + roff(word.substr(0, word.size() - 1)) + "\\fR]";
    } else {
      out += "\\fI" + roff(word) + "\\fR";
    }
  }
  return out + "\n";
}

std::size_t word_count(const std::string& text) {
  std::istringstream in(text);
  std::string word;
  std::size_t count = 0;
  while (in >> word) ++count;
  return count;
}

// The options of one app (its own, not the configuration flags) as .TP entries; --help only
// when `with_help`.
std::string option_entries(const CLI::App& app, bool with_help = true) {
  std::string out;
  for (const CLI::Option* option : app.get_options()) {
    if (option->get_group() != "Options") continue;
    if (option == app.get_help_ptr() && !with_help) continue;
    std::string name;
    if (!option->nonpositional()) {
      name = "\\fI" + roff(option->get_name(true)) + "\\fR";
    } else {
      for (const std::string& shortname : option->get_snames())
        name += (name.empty() ? "" : ", ") + std::string("\\fB\\-") + shortname + "\\fR";
      for (const std::string& longname : option->get_lnames())
        name += (name.empty() ? "" : ", ") + std::string("\\fB\\-\\-") + roff(longname) + "\\fR";
      if (!is_flag(*option)) name += " \\fI" + roff(value_placeholder(*option)) + "\\fR";
    }
    out += fmt::format(".TP\n{}\n{}\n", name, roff(sentence(option->get_description())));
  }
  return out;
}

std::string environment_entries() {
  std::string out;
  for (ConfigSection section : kConfigSections) {
    out += fmt::format(".SS {}\n", roff(std::string(to_string(section))));
    for (const ConfigVariable& row : config_variables()) {
      if (row.section != section) continue;
      const std::string range = row.range_text();
      std::string text = row.help;
      if (!range.empty()) text += " (" + range + ")";
      text += fmt::format(". Default: {}", row.default_text());
      if (row.package_value)
        text += fmt::format("; /etc/provision-agent/agent.env sets {}", row.package_value);
      text += '.';
      if (*row.note) text += std::string(" ") + row.note;
      out += fmt::format(".TP\n.B {}\n(\\fB\\-\\-{}\\fR \\fI{}\\fR) {}\n", roff(row.env),
                         roff(std::string(row.flag).substr(2)), roff(config_value_name(row)),
                         roff(text));
    }
  }
  return out;
}

std::string see_also(const CommandLine& line, const std::string& page) {
  std::vector<std::string> pages;
  if (page != kProgram) pages.push_back(fmt::format(".BR {} (1)", roff(kProgram)));
  for (const CommandLine::Entry& entry : line.subcommands) {
    const std::string other = std::string(kProgram) + "-" + entry.spec->name;
    if (!entry.spec->hidden && other != page)
      pages.push_back(fmt::format(".BR {} (1)", roff(other)));
  }
  pages.push_back(".BR journalctl (1)");
  pages.push_back(".BR systemd.exec (5)");
  std::string out = ".SH SEE ALSO\n";
  for (std::size_t i = 0; i < pages.size(); ++i)
    out += pages[i] + (i + 1 < pages.size() ? " ,\n" : "\n");
  return out;
}

std::string main_page(const CommandLine& line) {
  std::string out = header(
      kProgram, line.app.get_description().substr(line.app.get_description().find(": ") + 2));
  out += ".SH SYNOPSIS\n";
  out += fmt::format("\\fB{}\\fR [\\fIOPTIONS\\fR] [\\fICOMMAND\\fR] [\\fICOMMAND OPTIONS\\fR]\n",
                     roff(kProgram));
  out += ".SH DESCRIPTION\n" + paragraphs(kDescription);
  out += ".SH COMMANDS\n";
  for (const CommandLine::Entry& entry : line.subcommands) {
    if (entry.spec->hidden) continue;
    out += fmt::format(".TP\n.B {}\n{} See\n.BR {}\\-{} (1).\n", roff(entry.spec->name),
                       roff(sentence(entry.spec->summary)), roff(kProgram), roff(entry.spec->name));
  }
  out += ".SH OPTIONS\n";
  out += option_entries(line.app);
  out += ".PP\nEvery configuration variable below also has a flag, named in its entry.\n";
  out += ".SH ENVIRONMENT\n" + paragraphs(kConfigurationSources) + environment_entries();
  out += ".SH FILES\n";
  std::istringstream files(kFiles);
  std::string file_line;
  bool name_next = true;
  while (std::getline(files, file_line)) {
    if (file_line.empty()) {
      name_next = true;
      continue;
    }
    out += name_next ? fmt::format(".TP\n.I {}\n", roff(file_line)) : roff(file_line) + "\n";
    name_next = false;
  }
  out += ".SH EXIT STATUS\n" + paragraphs(commands().front().exit_status);
  out += see_also(line, kProgram);
  return out;
}

std::string subcommand_page(const CommandLine& line, const CommandLine::Entry& entry) {
  const std::string name = entry.spec->name;
  const std::string page = std::string(kProgram) + "-" + name;
  const std::string path = std::string(kProgram) + " " + name;
  std::string out = header(page, entry.spec->summary);
  out += ".SH SYNOPSIS\n";
  const auto nested =
      entry.app->get_subcommands([](const CLI::App* app) { return !app->get_group().empty(); });
  if (nested.empty()) {
    out += synopsis_line(usage(*entry.app, path), word_count(path));
  } else {
    for (std::size_t i = 0; i < nested.size(); ++i) {
      if (i > 0) out += ".br\n";
      const std::string nested_path = path + " " + nested[i]->get_name();
      out += synopsis_line(usage(*nested[i], nested_path), word_count(nested_path));
    }
  }
  out += ".SH DESCRIPTION\n" + paragraphs(entry.spec->description);
  for (const CLI::App* sub : nested) {
    out += fmt::format(".SS {} {}\n", roff(name), roff(sub->get_name()));
    out += paragraphs(sentence(sub->get_description()));
  }
  out += ".SH OPTIONS\n";
  out += option_entries(*entry.app);
  for (const CLI::App* sub : nested) {
    const std::string entries = option_entries(*sub, false);
    if (entries.empty()) continue;
    out += fmt::format(".SS {} {}\n", roff(name), roff(sub->get_name())) + entries;
  }
  out += fmt::format(
      ".PP\nThe options of\n.BR {} (1),\n\\-\\-env\\-file and one flag per configuration "
      "variable, are accepted too.\n",
      roff(kProgram));
  out += ".SH ENVIRONMENT\n";
  if (entry.spec->full_environment) {
    out += paragraphs(kConfigurationSources) + environment_entries();
  } else {
    out += fmt::format(
        ".PP\nThe configuration variables of\n.BR {} (1),\nread from the flags, the environment "
        "and \\-\\-env\\-file as the daemon reads them.\n",
        roff(kProgram));
  }
  out += ".SH EXIT STATUS\n" + paragraphs(entry.spec->exit_status);
  out += see_also(line, page);
  return out;
}

}  // namespace

std::string sentence(std::string text) {
  if (!text.empty()) text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
  if (!text.empty() && text.back() != '.') text += '.';
  return text;
}

std::string manual_page(const CommandLine& line, const std::string& page) {
  if (page == kProgram) return main_page(line);
  for (const CommandLine::Entry& entry : line.subcommands)
    if (!entry.spec->hidden && page == std::string(kProgram) + "-" + entry.spec->name)
      return subcommand_page(line, entry);
  return {};
}

}  // namespace pa::cli
