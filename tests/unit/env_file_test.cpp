// The env-file syntax of systemd's EnvironmentFile= (SPEC section 2), as the service and
// `config --env-file` must both read it: systemd v252's own test inputs and outputs
// (src/test/test-env-file.c and the env-file cases of src/test/test-fileio.c), each rule on its
// own, and the same inputs through the systemd installed on this machine.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "config/env_file.hpp"
#include "test_support.hpp"

namespace {

namespace test = pa::test;
using Values = std::map<std::string, std::string>;

#ifndef PA_SYSTEMD_ENV_GENERATOR
#define PA_SYSTEMD_ENV_GENERATOR ""
#endif

Values values_of(const std::string& text) {
  Values values;
  for (const pa::EnvAssignment& assignment : pa::parse_env_text(text).assignments) {
    values[assignment.name] = assignment.value;
  }
  return values;
}

std::vector<std::string> warnings_of(const std::string& text) {
  std::vector<std::string> out;
  for (const pa::EnvFileWarning& warning : pa::parse_env_text(text).warnings) {
    out.push_back(std::to_string(warning.line) + ": " + warning.message);
  }
  return out;
}

struct Case {
  const char* name;
  std::string text;
  Values expected;  // what a service started with EnvironmentFile= gets
};

// systemd v252's own tests (src/test/test-env-file.c; env-file cases of src/test/test-fileio.c)
// with the values EnvironmentFile= ends up with, then one case per rule of env_file.hpp.
const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      // test-env-file.c env_file_1: later entries win, continuation lines outside quotes.
      {"systemd load_env_file_1",
       "a=a\n"
       "a=b\n"
       "a=b\n"
       "a=a\n"
       "b=b\\\n"
       "c\n"
       "d= d\\\n"
       "e  \\\n"
       "f  \n"
       "g=g\\ \n"
       "h= ąęół\\ śćńźżμ \n"
       "i=i\\",
       {{"a", "a"}, {"b", "bc"}, {"d", "de  f"}, {"g", "g "}, {"h", "ąęół śćńźżμ"}, {"i", "i"}}},
      {"systemd load_env_file_2", "a=a\\\n", {{"a", "a"}}},
      // env_file_3: in v252 a comment ending in a backslash continues onto the next line, so
      // nothing here is an assignment (v254 changed that; its test expects normal1 and normal2).
      {"systemd load_env_file_3 (v252)",
       "#SPAMD_ARGS=\"-d --socketpath=/var/lib/bulwark/spamd \\\n"
       "#--nouser-config                                     \\\n"
       "normal=line",
       {}},
      {"systemd load_env_file_3 (v254 input)",
       "#SPAMD_ARGS=\"-d --socketpath=/var/lib/bulwark/spamd \\\n"
       "#--nouser-config                                     \\\n"
       "normal1=line\\\n"
       "111\n"
       ";normal=ignored                                      \\\n"
       "normal2=line222\n"
       "normal ignored                                       \\\n",
       {}},
      {"systemd load_env_file_4",
       "# Generated\n"
       "\n"
       "HWMON_MODULES=\"coretemp f71882fg\"\n"
       "\n"
       "# For compatibility reasons\n"
       "\n"
       "MODULE_0=coretemp\n"
       "MODULE_1=f71882fg",
       {{"HWMON_MODULES", "coretemp f71882fg"},
        {"MODULE_0", "coretemp"},
        {"MODULE_1", "f71882fg"}}},
      {"systemd load_env_file_5", "a=\nb=", {{"a", ""}, {"b", ""}}},
      {"systemd load_env_file_6",
       "a=\\ \\n \\t \\x \\y \\' \n"
       "b= \\$'                  \n"
       "c= ' \\n\\t\\$\\`\\\\\n"
       "'   \n"
       "d= \" \\n\\t\\$\\`\\\\\n"
       "\"   \n",
       {{"a", " n t x y '"}, {"b", "$'"}, {"c", " \\n\\t\\$\\`\\\\\n"}, {"d", " \\n\\t$`\\\n"}}},
      // test-fileio.c parse_env_file: load_env_file() keeps "export nine", which the service
      // manager then drops as an invalid name.
      {"systemd parse_env_file",
       "one=BAR   \n"
       "# comment\n"
       " # comment \n"
       " ; comment \n"
       "  two   =   bar    \n"
       "invalid line\n"
       "invalid line #comment\n"
       "three = \"333\n"
       "xxxx\"\n"
       "four = '44\\\"44'\n"
       "five = \"55\\\"55\" \"FIVE\" cinco   \n"
       "six = seis sechs\\\n"
       " sis\n"
       "seven=\"sevenval\" #nocomment\n"
       "eight=eightval #nocomment\n"
       "export nine=nineval\n"
       "ten=ignored\n"
       "ten=ignored\n"
       "ten=\n"
       "eleven=\\value\n"
       "twelve=\"\\value\"\n"
       "thirteen='\\value'",
       {{"one", "BAR"},
        {"two", "bar"},
        {"three", "333\nxxxx"},
        {"four", "44\\\"44"},
        {"five", "55\"55FIVEcinco"},
        {"six", "seis sechs sis"},
        {"seven", "sevenval#nocomment"},
        {"eight", "eightval #nocomment"},
        {"ten", ""},
        {"eleven", "value"},
        {"twelve", "\\value"},
        {"thirteen", "\\value"}}},
      {"systemd parse_multiline_env_file",
       "one=BAR\\\n"
       "\\ \\ \\ \\ VAR\\\n"
       "\\\tGAR\n"
       "#comment\n"
       "two=\"bar\\\n"
       "    var\\\n"
       "\tgar\"\n"
       "#comment\n"
       "tri=\"bar \\\n"
       "    var \\\n"
       "\tgar \"\n",
       {{"one", "BAR    VAR\tGAR"}, {"two", "bar    var\tgar"}, {"tri", "bar     var \tgar "}}},
      // merge_env_file_invalid: merge_env_file() (environment.d) drops even "one =" and " two="
      // for lacking a value; load_env_file() (EnvironmentFile=) keeps them, empty.
      {"systemd merge_env_file_invalid",
       "unset one   \n"
       "unset one=   \n"
       "unset one=1   \n"
       "one   \n"
       "one =  \n"
       "one two =\n"
       "\x20two=\n"
       "#comment=comment\n"
       ";comment2=comment2\n"
       "#\n"
       "\n\n",
       {{"one", ""}, {"two", ""}}},
      {"systemd load_env_file_pairs",
       "NAME=\"Arch Linux\"\n"
       "ID=arch\n"
       "PRETTY_NAME=\"Arch Linux\"\n"
       "ANSI_COLOR=\"0;36\"\n"
       "HOME_URL=\"https://www.archlinux.org/\"\n"
       "SUPPORT_URL=\"https://bbs.archlinux.org/\"\n"
       "BUG_REPORT_URL=\"https://bugs.archlinux.org/\"\n",
       {{"NAME", "Arch Linux"},
        {"ID", "arch"},
        {"PRETTY_NAME", "Arch Linux"},
        {"ANSI_COLOR", "0;36"},
        {"HOME_URL", "https://www.archlinux.org/"},
        {"SUPPORT_URL", "https://bbs.archlinux.org/"},
        {"BUG_REPORT_URL", "https://bugs.archlinux.org/"}}},

      {"whitespace around key and value",
       "  \tKEY \t=\t  some value \t \n",
       {{"KEY", "some value"}}},
      {"value with = in it",
       "URL=mqtt://h?a=b==c\nEQ===\n",
       {{"URL", "mqtt://h?a=b==c"}, {"EQ", "=="}}},
      {"single quotes are literal",
       "A='se=cret # not a comment \\n \\\\ \"x\"'\nB=' spaced '\n",
       {{"A", "se=cret # not a comment \\n \\\\ \"x\""}, {"B", " spaced "}}},
      {"single quotes span lines", "A='line1\nline2'\n", {{"A", "line1\nline2"}}},
      {"double quotes unescape only \" \\ ` $",
       R"(A="q\" b\\ t\` d\$ n\n x\x")",
       {{"A", "q\" b\\ t` d$ n\\n x\\x"}}},
      {"quoted parts concatenate, dropping the space between",
       "A=\"x\" 'y' z\nB='x'\"y\"\n",
       {{"A", "xyz"}, {"B", "xy"}}},
      {"quotes after unquoted text are literal", "A=x \"y\"\n", {{"A", "x \"y\""}}},
      {"backslash-newline joins lines in and outside double quotes, not in single quotes",
       "A=one\\\ntwo\nB=\"three\\\nfour\"\nC='five\\\nsix'\n",
       {{"A", "onetwo"}, {"B", "threefour"}, {"C", "five\\\nsix"}}},
      {"backslash outside quotes escapes any character",
       "A=\\\"x\\'\\#\\\\\nB=keep\\ \n",
       {{"A", "\"x'#\\"}, {"B", "keep "}}},
      {"comments only at line start",
       "# A=1\n  ; B=2\nC=3 # not a comment\nD=4;5\n",
       {{"C", "3 # not a comment"}, {"D", "4;5"}}},
      {"blank lines and trailing whitespace", "\n\n   \n\t\nA=1   \n\n", {{"A", "1"}}},
      {"CRLF line ends",
       "A=1\r\nB='two'\r\n# c\r\nC=\"3\"\r\n",
       {{"A", "1"}, {"B", "two"}, {"C", "3"}}},
      // "\r" ends the line: backslash-CRLF eats the "\r" and the "\n" then ends the value.
      {"backslash before CRLF joins nothing", "A=x\\\r\nB=2\r\n", {{"A", "x"}, {"B", "2"}}},
      {"export prefix is an invalid name",
       "export MQTT_PORT=1884\nMQTT_HOST=h\n",
       {{"MQTT_HOST", "h"}}},
      {"invalid names are ignored", "MY KEY=1\n1ABC=2\nA-B=3\n=4\nÄ=5\nOK_1=x\n", {{"OK_1", "x"}}},
      {"later assignment wins", "A=1\nB=2\nA=3\n", {{"A", "3"}, {"B", "2"}}},
      {"unterminated quote runs to the end",
       "A=1\nB=\"open\nC=2\n",
       {{"A", "1"}, {"B", "open\nC=2\n"}}},
      {"invalid UTF-8 outside assignments is harmless",
       "# \xff\nno equals \xff\nA=1\n",
       {{"A", "1"}}},
      {"control characters and UTF-8 in values",
       "A=x\x01y\x7fz\tw\nB=\"ą\t€\"\n",
       {{"A", "x\x01y\x7fz\tw"}, {"B", "ą\t€"}}},
  };
  return all;
}

TEST(EnvFileCases, ValuesAreThoseOfEnvironmentFile) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(values_of(c.text), c.expected);
  }
}

// --- rules that show in more than the values ---------------------------------------------------

TEST(EnvFileRules, AssignmentsKeepTheOrderOfFirstAppearanceAndTheLineOfTheLast) {
  const auto assignments = pa::parse_env_text("A=1\nB=2\nA=3\n").assignments;
  ASSERT_EQ(assignments.size(), 2u);
  EXPECT_EQ(assignments[0].name, "A");
  EXPECT_EQ(assignments[0].line, 3u);
  EXPECT_EQ(assignments[1].name, "B");
}

TEST(EnvFileRules, DroppedLinesAreNamedInWarnings) {
  EXPECT_EQ(
      warnings_of("one=BAR\ninvalid line\ninvalid line #comment\nexport nine=nineval\n"),
      (std::vector<std::string>{"2: ignoring a line that is not NAME=VALUE",
                                "3: ignoring a line that is not NAME=VALUE",
                                "4: ignoring \"export nine\": not a valid variable name (systemd's "
                                "EnvironmentFile= has no `export` prefix)"}));
}

TEST(EnvFileRules, ExportPrefixIsAnInvalidNameAndIgnored) {
  const std::string text = "export MQTT_PORT=1884\nMQTT_HOST=h\n";
  EXPECT_EQ(values_of(text), (Values{{"MQTT_HOST", "h"}}));
  ASSERT_EQ(warnings_of(text).size(), 1u);
  EXPECT_NE(warnings_of(text)[0].find("1: ignoring \"export MQTT_PORT\""), std::string::npos);
  EXPECT_NE(warnings_of(text)[0].find("no `export` prefix"), std::string::npos);
}

TEST(EnvFileRules, InvalidNamesAreIgnoredWithAWarningThatHoldsNoValue) {
  const std::string text = "MY KEY=secret1\n1ABC=secret2\nA-B=secret3\n=secret4\nOK_1=x\n";
  EXPECT_EQ(values_of(text), (Values{{"OK_1", "x"}}));
  const auto warnings = warnings_of(text);
  ASSERT_EQ(warnings.size(), 4u);
  EXPECT_EQ(warnings[0],
            "1: ignoring \"MY KEY\": not a valid variable name (letters, digits and "
            "_, not starting with a digit)");
  EXPECT_EQ(warnings[1].substr(0, 15), "2: ignoring \"1A");
  EXPECT_EQ(warnings[3], "4: ignoring a line that is not NAME=VALUE");  // "=" begins the name
  for (const std::string& warning : warnings) {
    EXPECT_EQ(warning.find("secret"), std::string::npos) << warning;
  }
}

TEST(EnvFileRules, UnterminatedQuoteRunsToTheEndWithAWarning) {
  const std::string text = "A=1\nB=\"open\nC=2\n";
  EXPECT_EQ(values_of(text), (Values{{"A", "1"}, {"B", "open\nC=2\n"}}));
  EXPECT_EQ(warnings_of(text),
            (std::vector<std::string>{"2: the quote opened in the value of B is never closed: "
                                      "the value runs to the end of the file"}));
}

TEST(EnvFileRules, NulByteRefusesTheWholeFile) {
  try {
    pa::parse_env_text(std::string("A=1\nB=x\0y\n", 10));
    FAIL() << "no EnvFileError";
  } catch (const pa::EnvFileError& error) {
    EXPECT_EQ(error.line, 2u);
    EXPECT_STREQ(error.what(), "line 2: contains a NUL byte");
  }
}

// test-env-file.c load_env_file_invalid_utf8: noncharacters in a key or value fail the load.
TEST(EnvFileRules, SystemdInvalidUtf8CasesRefuseTheFile) {
  for (const char* text : {"fo\xef\xbf\xbeo=bar",
                           "foo=b\xef\xbf\xbf"
                           "ar",
                           "baz=hello world\xef\xbf\xbe"}) {
    EXPECT_THROW(pa::parse_env_text(text), pa::EnvFileError) << text;
  }
}

TEST(EnvFileRules, InvalidUtf8InAnAssignmentRefusesTheFileButNotInACommentOrDroppedLine) {
  EXPECT_THROW(pa::parse_env_text("A=\xff\n"), pa::EnvFileError);
  EXPECT_THROW(pa::parse_env_text("A\xc3=1\n"), pa::EnvFileError);
  EXPECT_EQ(values_of("# \xff\nno equals \xff\nA=1\n"), (Values{{"A", "1"}}));
}

TEST(EnvFileRules, Utf8CheckIsSystemds) {
  EXPECT_TRUE(pa::env_utf8_is_valid("ąęół € 𝄞 \x7f\x01"));
  EXPECT_FALSE(pa::env_utf8_is_valid("\xc0\xaf"));                 // overlong "/"
  EXPECT_FALSE(pa::env_utf8_is_valid("\xed\xa0\x80"));             // surrogate U+D800
  EXPECT_FALSE(pa::env_utf8_is_valid("\xf4\x90\x80\x80"));         // U+110000
  EXPECT_FALSE(pa::env_utf8_is_valid("\xef\xb7\x90"));             // noncharacter U+FDD0
  EXPECT_FALSE(pa::env_utf8_is_valid("\xf0\x9f\xbf\xbf"));         // noncharacter U+1FFFF
  EXPECT_FALSE(pa::env_utf8_is_valid("\xe2\x82"));                 // truncated
  EXPECT_FALSE(pa::env_utf8_is_valid("\xf8\x88\x80\x80\x80"));     // 5-byte form
  EXPECT_FALSE(pa::env_utf8_is_valid("\xef\xb7\xaf"));             // noncharacter U+FDEF
  EXPECT_TRUE(pa::env_utf8_is_valid("\xef\xb7\x8f\xef\xb7\xb0"));  // U+FDCF, U+FDF0
}

TEST(EnvFileRules, NamesFollowBash) {
  EXPECT_TRUE(pa::env_name_is_valid("_"));
  EXPECT_TRUE(pa::env_name_is_valid("MQTT_HOST"));
  EXPECT_TRUE(pa::env_name_is_valid("a1"));
  EXPECT_FALSE(pa::env_name_is_valid(""));
  EXPECT_FALSE(pa::env_name_is_valid("1a"));
  EXPECT_FALSE(pa::env_name_is_valid("a.b"));
  EXPECT_FALSE(pa::env_name_is_valid("a-b"));
  EXPECT_FALSE(pa::env_name_is_valid("ä"));
}

// --- the same inputs through the systemd installed here -----------------------------------------
//
// Without systemd as PID 1 no service can be started, but the user environment generator of
// systemd (30-systemd-environment-d-generator, the systemd package) parses ~/.config/environment.d
// files with the same parse_env_file_internal() of libsystemd-shared, and prints what it read.
// It pushes through merge_env_file_push() instead of load_env_file_push(), which differs in three
// ways: an assignment with an empty value is skipped instead of kept (modelled below on
// scan_env_text(), so the state machine itself is compared), `$NAME` and `${NAME}` are expanded
// (no case has them), and invalid UTF-8 stops that file part-way instead of refusing it (no case
// has that either).

// Decodes the generator's output: NAME=value, or NAME="..." with shell_maybe_quote()'s escapes
// (\\, \", \`, \$, \n, \t, \r, \a, \b, \f, \v and \ooo octal).
Values decode_generator_output(const std::string& output) {
  Values values;
  std::size_t at = 0;
  while (at < output.size()) {
    const std::size_t equals = output.find('=', at);
    if (equals == std::string::npos) break;
    const std::string name = output.substr(at, equals - at);
    std::string value;
    std::size_t i = equals + 1;
    if (i < output.size() && output[i] == '"') {
      for (++i; i < output.size() && output[i] != '"'; ++i) {
        if (output[i] != '\\' || i + 1 >= output.size()) {
          value += output[i];
          continue;
        }
        const char next = output[++i];
        switch (next) {
          case 'n':
            value += '\n';
            break;
          case 't':
            value += '\t';
            break;
          case 'r':
            value += '\r';
            break;
          case 'a':
            value += '\a';
            break;
          case 'b':
            value += '\b';
            break;
          case 'f':
            value += '\f';
            break;
          case 'v':
            value += '\v';
            break;
          default:
            if (next >= '0' && next <= '7' && i + 2 < output.size()) {
              value += static_cast<char>(std::stoi(output.substr(i, 3), nullptr, 8));
              i += 2;
            } else {
              value += next;
            }
        }
      }
      ++i;  // the closing quote
    } else {
      while (i < output.size() && output[i] != '\n') value += output[i++];
    }
    values[name] = value;
    at = i + 1;  // past the newline
  }
  return values;
}

// What the installed systemd reads from `text` as an environment.d file, together with what the
// machine's own environment.d files set (they are read too).
Values systemd_reads(const std::string& text) {
  test::TempDir config_home;
  const std::string folder = config_home.file("environment.d");
  EXPECT_EQ(mkdir(folder.c_str(), 0700), 0);
  // "zz" sorts after the machine's own files, so ours wins where a name repeats.
  test::write_file(folder + "/zz-provision-agent-test.conf", text);
  // stdout only: the generator logs what it ignores on stderr.
  const test::CommandResult result =
      test::run_command("env -i XDG_CONFIG_HOME=" + test::shell_quote(config_home.path()) + " " +
                        test::shell_quote(PA_SYSTEMD_ENV_GENERATOR) + " 2>/dev/null");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return decode_generator_output(result.output);
}

bool has_expansion(const std::string& value) {
  for (std::size_t at = value.find('$'); at != std::string::npos; at = value.find('$', at + 1)) {
    if (at + 1 < value.size()) {
      const char next = value[at + 1];
      if (next == '{' || next == '$' || next == '_' ||
          std::isalnum(static_cast<unsigned char>(next)))
        return true;
    }
  }
  return false;
}

// What merge_env_file_push() makes of our scan of `text` on top of `machine`.
Values generator_model(const std::string& text, Values machine) {
  std::vector<pa::EnvFileWarning> warnings;
  for (const pa::EnvAssignment& assignment : pa::scan_env_text(text, warnings)) {
    EXPECT_FALSE(has_expansion(assignment.value)) << "the generator would expand " << text;
    if (assignment.value.empty() || !pa::env_name_is_valid(assignment.name)) continue;
    machine[assignment.name] = assignment.value;
  }
  return machine;
}

TEST(EnvFileMatchesSystemd, InstalledSystemdReadsEveryCaseTheSame) {
  ASSERT_TRUE(test::file_exists(PA_SYSTEMD_ENV_GENERATOR))
      << "systemd's environment.d generator is missing: install the systemd package "
         "(scripts/deps.sh does)";
  const Values machine = systemd_reads("");
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(systemd_reads(c.text), generator_model(c.text, machine));
  }
}

// The shipped agent.env with every variable uncommented, as an operator edits it.
TEST(EnvFileMatchesSystemd, ShippedAgentEnvWithEveryVariableUncommented) {
  ASSERT_TRUE(test::file_exists(PA_SYSTEMD_ENV_GENERATOR));
  std::istringstream shipped(test::read_file(PA_AGENT_ENV));
  std::string text, line;
  std::size_t uncommented = 0;
  while (std::getline(shipped, line)) {
    const bool variable = line.size() > 2 && line[0] == '#' && std::isupper(line[1]) &&
                          line.find('=') != std::string::npos && line.find(' ') > line.find('=');
    if (variable) {
      line.erase(0, 1);
      ++uncommented;
    }
    text += line + "\n";
  }
  ASSERT_GT(uncommented, 30u);
  const Values ours = values_of(text);
  EXPECT_EQ(ours.at("PROVISION_KEY_TYPE"), "rsa-2048");
  EXPECT_EQ(ours.at("PROVISION_DEVICES"), "*");
  EXPECT_EQ(ours.at("MQTT_BROKER_URL"), "");
  EXPECT_EQ(systemd_reads(text), generator_model(text, systemd_reads("")));
}

// A NUL byte: systemd reads nothing from the file, and we refuse it.
TEST(EnvFileMatchesSystemd, NulByteFileGivesSystemdNothing) {
  ASSERT_TRUE(test::file_exists(PA_SYSTEMD_ENV_GENERATOR));
  const std::string text("PA_NUL_TEST=1\nB=x\0y\n", 20);
  EXPECT_EQ(systemd_reads(text), systemd_reads(""));
  EXPECT_THROW(pa::parse_env_text(text), pa::EnvFileError);
}

// --- through the configuration ------------------------------------------------------------------

TEST(EnvFileConfig, ParseEnvFileLogsIgnoredLinesAndKeepsTheRest) {
  test::TempDir dir;
  const std::string path = dir.file("agent.env");
  test::write_file(path, "export MQTT_PORT=1884\nMQTT_HOST=broker.local\nMQTT_PASSWORD secret\n");
  testing::internal::CaptureStderr();
  const auto values = pa::parse_env_file(path);
  const std::string logged = testing::internal::GetCapturedStderr();
  EXPECT_EQ(values, (Values{{"MQTT_HOST", "broker.local"}}));
  EXPECT_NE(logged.find("env file " + path + " line 1: ignoring \"export MQTT_PORT\""),
            std::string::npos)
      << logged;
  EXPECT_NE(logged.find("env file " + path + " line 3: ignoring a line that is not NAME=VALUE"),
            std::string::npos)
      << logged;
  EXPECT_EQ(logged.find("secret"), std::string::npos) << logged;
}

TEST(EnvFileConfig, FileSystemdRefusesIsAConfigErrorNamingFileAndLine) {
  test::TempDir dir;
  const std::string path = dir.file("agent.env");
  test::write_file(path, "MQTT_HOST=a\nMQTT_USER=\xc3\x28\n");
  try {
    pa::parse_env_file(path);
    FAIL() << "no ConfigError";
  } catch (const pa::ConfigError& error) {
    EXPECT_EQ(std::string(error.what()),
              "invalid env file " + path +
                  " line 2: invalid UTF-8 in the value of MQTT_USER; systemd's "
                  "EnvironmentFile= refuses such a file whole");
  }
}

}  // namespace
