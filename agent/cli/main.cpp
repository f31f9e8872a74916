// provision-agent: the daemon and its operator subcommands (SPEC section 7), one row each in
// commands.cpp.
#include <sys/prctl.h>

#include <cstdio>
#include <string_view>

#include "cli/command.hpp"

namespace {

// SPEC section 2: a password given as a flag is visible to every local user in
// /proc/<pid>/cmdline. Overwriting it in argv shortens that window to the start-up; the warning
// points to the fix.
void hide_password_flag(int argc, char** argv) {
  constexpr std::string_view kFlag = "--mqtt-password";
  bool seen = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view word = argv[i];
    char* value = nullptr;
    if (word == kFlag && i + 1 < argc)
      value = argv[i + 1];
    else if (word.size() > kFlag.size() && word.substr(0, kFlag.size() + 1) == "--mqtt-password=")
      value = argv[i] + kFlag.size() + 1;
    if (value == nullptr) continue;
    seen = true;
    for (char* c = value; *c != '\0'; ++c) *c = 'x';
  }
  if (seen)
    std::fprintf(stderr,
                 "provision-agent: warning: --mqtt-password is visible to every local user in "
                 "/proc/<pid>/cmdline; put the password in a file readable only by the agent and "
                 "set MQTT_PASSWORD_FILE instead\n");
}

}  // namespace

int main(int argc, char** argv) {
  // SPEC section 8: no core file may ever hold the broker password or a private key.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  pa::cli::CommandLine command_line;
  try {
    command_line.app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = command_line.app.exit(error);
    return code == 0 ? 0 : pa::kExitConfig;
  }
  hide_password_flag(argc, argv);

  try {
    return command_line.run();
  } catch (const pa::ConfigError& error) {
    std::fprintf(stderr, "provision-agent: %s\n", error.what());
    return pa::kExitConfig;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "provision-agent: fatal: %s\n", error.what());
    return 1;
  }
}
