// The audit log (SPEC section 5) as it is read back: `audit verify` over one or more generation
// files (audit::verify_audit), a checkpoint message (audit::parse_checkpoint), and the AuditLog
// the agent opens at start on whatever a crash or a hand left in the state folder.
//
// Nothing throws or crashes; a report names a problem exactly when it is not intact, with a
// sentence; a log that verifies intact is left byte for byte as it was when the agent opens it.
// The input's 0x1E bytes split it into generation files, oldest first.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "audit/audit_log.hpp"
#include "audit/format.hpp"
#include "audit/verify.hpp"
#include "fuzz_support.hpp"
#include "keystore/file_util.hpp"

namespace {

using namespace pa;
namespace fs = std::filesystem;

std::vector<std::string_view> split_files(std::string_view text) {
  std::vector<std::string_view> files;
  while (true) {
    const std::size_t cut = text.find('\x1e');
    files.push_back(text.substr(0, cut));
    if (cut == std::string_view::npos) return files;
    text.remove_prefix(cut + 1);
  }
}

void check_report(const audit::Report& report, std::size_t files) {
  PA_FUZZ_CHECK(report.intact() == (report.problem == audit::Problem::none), report.detail);
  PA_FUZZ_CHECK(report.intact() || !report.detail.empty(), audit::to_string(report.problem));
  PA_FUZZ_CHECK(report.file < files || (files == 0 && report.file == 0), report.detail);
}

void check_reopened(std::string_view current) {
  static const fuzz::ScratchDir scratch;
  const fs::path state = scratch.path() / "state";
  fs::remove_all(state);
  fs::create_directories(state);
  fuzz::write_file(state / audit::generation_file(0), current);
  const bool intact = audit::verify_audit({current}).intact();
  { audit::AuditLog log(state); }  // never throws: what it cannot use, it logs
  const std::string after = keystore::read_file(state / audit::generation_file(0));
  if (intact) PA_FUZZ_CHECK(after == current, "an intact log was changed by opening it");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  const std::vector<std::string_view> files = split_files(text);
  check_report(audit::verify_audit(files), files.size());
  audit::VerifyOptions later;
  later.may_begin_later = true;
  check_report(audit::verify_audit(files, later), files.size());
  std::string why;
  if (const auto checkpoint = audit::parse_checkpoint(text, &why)) {
    audit::VerifyOptions against;
    against.checkpoint = checkpoint->head;
    check_report(audit::verify_audit(files, against), files.size());
  } else {
    PA_FUZZ_CHECK(!why.empty(), "a refused checkpoint without a reason");
  }
  if (files.size() == 1) check_reopened(files.front());
  return 0;
}
