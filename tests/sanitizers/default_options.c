/* Sanitizer options compiled into every executable of a PA_SANITIZE build (see the top
 * CMakeLists). Compiled in rather than passed as ASAN_OPTIONS and friends because the
 * integration tests start the agent with a clean environment (tests/support: only PATH and the
 * agent's own variables), and a sanitized agent must behave the same however it is started.
 * Variables in the environment still override these, e.g. ASAN_OPTIONS=log_path=stderr when
 * running the agent by hand.
 *
 * Every report goes to PA_SANITIZER_REPORT_DIR/<executable>.<pid>, where scripts/sanitize.sh
 * finds it after the tests: an agent that a test stops without looking at its exit status still
 * has its findings counted. */
#ifndef PA_SANITIZER_REPORT_DIR
#error "PA_SANITIZER_REPORT_DIR: the folder sanitizer reports go to"
#endif
#ifndef PA_TSAN_SUPPRESSIONS
#error "PA_TSAN_SUPPRESSIONS: tests/sanitizers/tsan_suppressions.txt"
#endif

#define PA_REPORTS "log_path=" PA_SANITIZER_REPORT_DIR "/report:log_exe_name=1"

const char* __asan_default_options(void);
const char* __ubsan_default_options(void);
const char* __tsan_default_options(void);

const char* __asan_default_options(void) {
  /* Leaks are findings (LeakSanitizer runs at exit); a global initialised from another file's
   * global before that one is ready is one too. */
  return PA_REPORTS ":detect_leaks=1:check_initialization_order=1:strict_init_order=1";
}

const char* __ubsan_default_options(void) {
  return PA_REPORTS ":print_stacktrace=1";
}

const char* __tsan_default_options(void) {
  /* Every race is reported (not only the first), and the process then exits with 66. What TSan
   * cannot see in uninstrumented libraries is suppressed, each entry with its reason. */
  return PA_REPORTS ":halt_on_error=0:second_deadlock_stack=1:suppressions=" PA_TSAN_SUPPRESSIONS;
}
