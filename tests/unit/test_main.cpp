// The main of every unit test executable (fmt's test-main is the model): GoogleTest, in a
// process set up as the tests expect it.
#include <gtest/gtest.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  // Log lines go to stderr, where tests read them, even when the tests themselves run under
  // journald (a CI job started by systemd-run): log_init() would otherwise pick the journal.
  ::unsetenv("JOURNAL_STREAM");
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
