// The audit log (SPEC section 5): the line format and its hash, the chain, rotation that keeps
// it, a torn last entry sealed at start, concurrent appends, the bounds, checkpoints, the
// verifier naming the first entry changed, removed, reordered or truncated away, and the JWS
// signatures of checkpoints.
#include <gtest/gtest.h>

#include <cryptopp/hex.h>
#include <cryptopp/sha.h>
#include <rapidjson/document.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "audit/audit_log.hpp"
#include "audit/jws.hpp"
#include "audit/verify.hpp"
#include "base/text.hpp"
#include "keystore/key_pair.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

using audit::AuditLog;
using audit::Problem;
namespace fs = std::filesystem;

// SHA-256 in hex, straight from Crypto++ (not through the code under test).
std::string sha256(const std::string& bytes) {
  std::string digest(CryptoPP::SHA256::DIGESTSIZE, '\0');
  CryptoPP::SHA256().CalculateDigest(reinterpret_cast<CryptoPP::byte*>(digest.data()),
                                     reinterpret_cast<const CryptoPP::byte*>(bytes.data()),
                                     bytes.size());
  std::string hex;
  CryptoPP::StringSource(digest, true,
                         new CryptoPP::HexEncoder(new CryptoPP::StringSink(hex), false));
  return hex;
}

std::vector<std::string> lines_of(const std::string& content) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t end; (end = content.find('\n', start)) != std::string::npos; start = end + 1)
    lines.push_back(content.substr(start, end - start));
  return lines;
}

std::string join(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) out += line + "\n";
  return out;
}

rapidjson::Document parse(const std::string& line) {
  rapidjson::Document doc;
  doc.Parse(line.c_str());
  return doc;
}

audit::Record operation(const std::string& action, const std::string& device,
                        std::optional<std::string> request_id = std::nullopt) {
  audit::Record record;
  record.action = action;
  record.device_id = device;
  record.request_id = std::move(request_id);
  record.fingerprint = "SHA256:fp-" + device;
  return record;
}

class AuditLogTest : public ::testing::Test {
 protected:
  std::string log_file(int generation = 0) const {
    return state.file(audit::generation_file(generation));
  }
  std::string content(int generation = 0) const { return test::read_file(log_file(generation)); }

  // Every generation present, oldest first, as `audit verify` reads them.
  audit::Report verify_files(audit::VerifyOptions options = {}, int generations = 4) const {
    std::vector<std::string> contents;
    for (int g = generations; g >= 0; --g)
      if (test::file_exists(log_file(g))) contents.push_back(content(g));
    const std::vector<std::string_view> views(contents.begin(), contents.end());
    return audit::verify_audit(views, options);
  }

  test::TempDir state;
};

TEST_F(AuditLogTest, WritesOneChainedLinePerOperationWithTheHashOfItsOwnBytes) {
  {
    AuditLog log(state.path());
    audit::Record generate = operation("generate", "pH01", "req-1");
    generate.user_id = "alice";
    log.record(generate);
    audit::Record update = operation("update", "pH01", "req-2");
    update.previous_fingerprint = "SHA256:fp-pH01";
    update.fingerprint = "SHA256:fp-new";
    log.record(update);
    audit::Record failed = operation("delete", "pH02");
    failed.ok = false;
    failed.fingerprint.reset();
    log.record(failed);
  }
  EXPECT_EQ(test::file_mode(log_file()), 0600);
  const auto lines = lines_of(content());
  ASSERT_EQ(lines.size(), 3u);
  std::string prev(64, '0');
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    // The hashed bytes: the line cut at its last ,"hash":" and closed again.
    const std::size_t cut = line.rfind(",\"hash\":\"");
    ASSERT_NE(cut, std::string::npos) << line;
    const std::string body = line.substr(0, cut) + "}";
    auto doc = parse(line);
    ASSERT_FALSE(doc.HasParseError()) << line;
    EXPECT_EQ(test::json_string(doc, "hash"), sha256(body)) << line;
    EXPECT_EQ(doc["seq"].GetUint64(), i + 1);
    EXPECT_EQ(test::json_string(doc, "prev"), prev);
    prev = test::json_string(doc, "hash");
    // The members, in the documented order, absent values as null.
    std::vector<std::string> names;
    for (const auto& member : doc.GetObject()) names.push_back(member.name.GetString());
    EXPECT_EQ(names, (std::vector<std::string>{"seq", "ts", "action", "device_id", "user_id",
                                               "request_id", "fingerprint", "previous_fingerprint",
                                               "outcome", "prev", "hash"}));
  }
  EXPECT_NE(lines[0].find(R"("action":"generate","device_id":"pH01","user_id":"alice",)"
                          R"("request_id":"req-1","fingerprint":"SHA256:fp-pH01",)"
                          R"("previous_fingerprint":null,"outcome":"ok")"),
            std::string::npos)
      << lines[0];
  EXPECT_NE(
      lines[1].find(R"("fingerprint":"SHA256:fp-new","previous_fingerprint":"SHA256:fp-pH01")"),
      std::string::npos)
      << lines[1];
  EXPECT_NE(lines[2].find(R"("user_id":null,"request_id":null,"fingerprint":null,)"
                          R"("previous_fingerprint":null,"outcome":"error")"),
            std::string::npos)
      << lines[2];
  EXPECT_TRUE(std::all_of(lines[0].begin(), lines[0].end(), [](char c) { return c != ' '; }));
  const auto ts = parse(lines[0]);
  EXPECT_EQ(test::json_string(ts, "ts").size(), std::string("2026-11-23T10:00:00Z").size());

  const audit::Report report = verify_files();
  EXPECT_TRUE(report.intact()) << report.detail;
  EXPECT_EQ(report.entries, 3u);
  EXPECT_EQ(report.last.seq, 3u);
  EXPECT_EQ(report.last.hash, prev);
}

TEST_F(AuditLogTest, ContinuesTheChainAfterARestart) {
  { AuditLog(state.path()).record(operation("generate", "pH01")); }
  std::string first_hash = test::json_string(parse(lines_of(content())[0]), "hash");
  {
    AuditLog log(state.path());
    EXPECT_EQ(log.head().seq, 1u);
    EXPECT_EQ(log.head().hash, first_hash);
    log.record(operation("publish", "pH01"));
  }
  const auto lines = lines_of(content());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(test::json_string(parse(lines[1]), "prev"), first_hash);
  EXPECT_TRUE(verify_files().intact());
}

TEST_F(AuditLogTest, RotationKeepsTheChainAndDropsTheOldestGeneration) {
  audit::LogOptions options;
  options.max_file_bytes = 1000;
  options.generations = 2;
  {
    AuditLog log(state.path(), options);
    for (int i = 0; i < 60; ++i) log.record(operation("publish", "pH01", std::to_string(i)));
  }
  ASSERT_TRUE(test::file_exists(log_file(0)));
  ASSERT_TRUE(test::file_exists(log_file(1)));
  ASSERT_TRUE(test::file_exists(log_file(2)));
  EXPECT_FALSE(test::file_exists(log_file(3)));
  // Each file stops growing once it reached the limit: at most one line beyond it.
  const std::size_t line_size = lines_of(content(1)).front().size() + 1;
  for (int g = 0; g <= 2; ++g) EXPECT_LT(content(g).size(), options.max_file_bytes + line_size);
  // The first line of each newer file names the last hash of the one before.
  for (int g = 2; g >= 1; --g) {
    const auto older = lines_of(content(g));
    const auto newer = lines_of(content(g - 1));
    EXPECT_EQ(test::json_string(parse(newer.front()), "prev"),
              test::json_string(parse(older.back()), "hash"));
    EXPECT_EQ(parse(newer.front())["seq"].GetUint64(), parse(older.back())["seq"].GetUint64() + 1);
  }
  // The oldest generation is there, so the log may begin after seq 1 (the rest was dropped).
  audit::VerifyOptions rotated;
  rotated.may_begin_later = true;
  const audit::Report report = verify_files(rotated, 2);
  EXPECT_TRUE(report.intact()) << report.detail;
  EXPECT_GT(report.first_seq, 1u);
  EXPECT_EQ(report.last.seq, 60u);
  // Without that, a log that does not begin at seq 1 lost its beginning.
  const audit::Report strict = verify_files({}, 2);
  EXPECT_EQ(strict.problem, Problem::removed);
  EXPECT_EQ(strict.seq, 1u);
}

TEST_F(AuditLogTest, ResumesFromTheRotatedFileWhenACrashLeftNoCurrentFile) {
  audit::LogOptions options;
  options.max_file_bytes = 400;
  {
    AuditLog log(state.path(), options);
    for (int i = 0; i < 5; ++i) log.record(operation("publish", "pH01"));
  }
  // A crash between renaming audit.log to audit.log.1 and creating the new one.
  const std::string last = content(0);
  fs::remove(log_file(0));
  test::write_file(log_file(1), content(1) + last, 0600);
  {
    AuditLog log(state.path(), options);
    EXPECT_EQ(log.head().seq, 5u);
    log.record(operation("delete", "pH01"));
  }
  EXPECT_EQ(parse(lines_of(content(0)).front())["seq"].GetUint64(), 6u);
  const audit::Report report = verify_files();
  EXPECT_TRUE(report.intact()) << report.detail;
  EXPECT_EQ(report.last.seq, 6u);
}

TEST_F(AuditLogTest, SealsATornLastEntryAtStart) {
  {
    AuditLog log(state.path());
    for (int i = 0; i < 3; ++i) log.record(operation("generate", "pH0" + std::to_string(i)));
  }
  const std::string intact = content();
  const std::string third_hash = test::json_string(parse(lines_of(intact)[2]), "hash");
  // A crash in the middle of the fourth append.
  const std::string torn = R"({"seq":4,"ts":"2026-11-23T10:00:00Z","action":"gen)";
  test::write_file(log_file(), intact + torn, 0600);
  {
    const audit::Report before = verify_files();
    EXPECT_EQ(before.problem, Problem::torn);
    EXPECT_EQ(before.seq, 4u);
    EXPECT_EQ(before.line, 4u);
  }
  {
    AuditLog log(state.path());
    EXPECT_EQ(log.head().seq, 4u);
    log.record(operation("publish", "pH00"));
  }
  const auto lines = lines_of(content());
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(content().substr(0, intact.size()), intact) << "the complete entries were changed";
  const auto seal = parse(lines[3]);
  EXPECT_EQ(test::json_string(seal, "action"), "seal");
  EXPECT_EQ(seal["seq"].GetUint64(), 4u);
  EXPECT_EQ(seal["cut_bytes"].GetUint64(), torn.size());
  EXPECT_EQ(seal["cut_seq"].GetUint64(), 4u);
  EXPECT_EQ(test::json_string(seal, "prev"), third_hash);
  EXPECT_TRUE(seal["device_id"].IsNull());
  EXPECT_EQ(parse(lines[4])["seq"].GetUint64(), 5u);

  const audit::Report after = verify_files();
  EXPECT_TRUE(after.intact()) << after.detail;
  ASSERT_EQ(after.seals.size(), 1u);
  EXPECT_EQ(after.seals[0].seq, 4u);
  EXPECT_EQ(after.seals[0].cut_bytes, torn.size());
}

TEST_F(AuditLogTest, SealsATornFirstEntry) {
  test::write_file(log_file(), R"({"seq":1,"ts":"20)", 0600);
  { AuditLog log(state.path()); }
  const auto lines = lines_of(content());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(test::json_string(parse(lines[0]), "action"), "seal");
  EXPECT_EQ(test::json_string(parse(lines[0]), "prev"), std::string(64, '0'));
  EXPECT_TRUE(verify_files().intact());
}

TEST_F(AuditLogTest, ConcurrentAppendsMakeOneUnbrokenChain) {
  constexpr int kThreads = 8;
  constexpr int kEach = 40;
  {
    AuditLog log(state.path());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&log, t] {
        for (int i = 0; i < kEach; ++i)
          log.record(operation("publish", "dev" + std::to_string(t),
                               std::to_string(t) + "-" + std::to_string(i)));
      });
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(log.head().seq, static_cast<std::uint64_t>(kThreads * kEach));
  }
  const auto lines = lines_of(content());
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kEach));
  std::set<std::string> ids;
  for (const auto& line : lines) ids.insert(test::json_string(parse(line), "request_id"));
  EXPECT_EQ(ids.size(), lines.size()) << "an operation was lost or written twice";
  const audit::Report report = verify_files();
  EXPECT_TRUE(report.intact()) << report.detail;
  EXPECT_EQ(report.entries, lines.size());
}

TEST_F(AuditLogTest, BoundsLongFieldsAndTheFilesOnDisk) {
  audit::LogOptions options;
  options.max_file_bytes = 2000;
  options.generations = 3;
  {
    AuditLog log(state.path(), options);
    // A request id as long as a payload may be, with multi-byte characters and invalid bytes.
    std::string huge;
    while (huge.size() < 60000) huge += "ü\xff";
    for (int i = 0; i < 200; ++i) log.record(operation("publish", "pH01", huge));
  }
  std::uintmax_t total = 0;
  for (const auto& entry : fs::directory_iterator(state.path())) total += entry.file_size();
  const auto lines = lines_of(content());
  ASSERT_FALSE(lines.empty());
  EXPECT_LE(total, (options.generations + 1) * (options.max_file_bytes + lines[0].size() + 1));
  EXPECT_FALSE(test::file_exists(log_file(4)));
  const std::string request_id = test::json_string(parse(lines[0]), "request_id");
  EXPECT_LE(request_id.size(), audit::kMaxFieldBytes);
  EXPECT_TRUE(is_valid_utf8(request_id));
  EXPECT_EQ(request_id.substr(request_id.size() - 3), "\xE2\x80\xA6");
  audit::VerifyOptions rotated;
  rotated.may_begin_later = true;
  EXPECT_TRUE(verify_files(rotated, 3).intact());
}

TEST_F(AuditLogTest, AFolderThatCannotBeWrittenIsNeverFatalAndIsRetried) {
  const std::string folder = state.file("later");
  AuditLog log(folder);
  log.record(operation("generate", "pH01"));  // logged, not thrown
  EXPECT_EQ(log.head().seq, 0u);
  ::mkdir(folder.c_str(), 0700);
  log.record(operation("generate", "pH02"));
  EXPECT_EQ(log.head().seq, 1u);
  const auto lines = lines_of(test::read_file(folder + "/audit.log"));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(test::json_string(parse(lines[0]), "device_id"), "pH02");
}

TEST_F(AuditLogTest, HandsACheckpointToTheSinkEveryNEntriesAndOnTheClock) {
  audit::LogOptions options;
  options.checkpoint_every = 10;
  AuditLog log(state.path(), options);
  std::vector<audit::Head> published;
  bool accept = true;
  log.set_checkpoint_sink([&](const audit::Head& head) {
    if (accept) published.push_back(head);
    return accept;
  });
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 25; ++i) log.record(operation("publish", "pH01"));
  const auto lines = lines_of(content());
  ASSERT_EQ(published.size(), 2u);
  EXPECT_EQ(published[0].seq, 10u);
  EXPECT_EQ(published[0].hash, test::json_string(parse(lines[9]), "hash"));
  EXPECT_EQ(published[1].seq, 20u);
  EXPECT_EQ(published[1].hash, test::json_string(parse(lines[19]), "hash"));

  // The clock: nothing before an hour has passed since the last one, then the head.
  log.tick(start + std::chrono::minutes(30));
  EXPECT_EQ(published.size(), 2u);
  log.tick(start + std::chrono::minutes(61));
  ASSERT_EQ(published.size(), 3u);
  EXPECT_EQ(published[2].seq, 25u);
  EXPECT_EQ(published[2].hash, test::json_string(parse(lines[24]), "hash"));
  // Every hour, even when nothing changed (a broker may have lost its retained messages).
  log.tick(start + std::chrono::minutes(100));
  EXPECT_EQ(published.size(), 3u);
  log.tick(start + std::chrono::minutes(122));
  EXPECT_EQ(published.size(), 4u);
  // A failed publication is tried again a minute later.
  accept = false;
  log.tick(start + std::chrono::minutes(183));
  accept = true;
  log.tick(start + std::chrono::minutes(183) + std::chrono::seconds(30));
  EXPECT_EQ(published.size(), 4u);
  log.tick(start + std::chrono::minutes(184) + std::chrono::seconds(1));
  EXPECT_EQ(published.size(), 5u);
}

TEST_F(AuditLogTest, PublishesTheHeadAtTheFirstTickOfAProcess) {
  { AuditLog(state.path()).record(operation("generate", "pH01")); }
  AuditLog log(state.path());
  std::vector<audit::Head> published;
  log.set_checkpoint_sink([&](const audit::Head& head) {
    published.push_back(head);
    return true;
  });
  log.tick();
  ASSERT_EQ(published.size(), 1u);
  EXPECT_EQ(published[0].seq, 1u);
}

// --- The verifier, over bytes.

class AuditVerifyTest : public AuditLogTest {
 protected:
  void SetUp() override {
    AuditLog log(state.path());
    for (int i = 1; i <= 10; ++i)
      log.record(operation(i % 2 ? "generate" : "publish", "dev" + std::to_string(i)));
    lines = lines_of(content());
    ASSERT_EQ(lines.size(), 10u);
  }
  audit::Report verify(const std::vector<std::string>& changed,
                       std::optional<audit::Head> checkpoint = std::nullopt) {
    text = join(changed);
    audit::VerifyOptions options;
    options.checkpoint = checkpoint;
    return audit::verify_audit({text}, options);
  }
  audit::Head head_at(std::size_t seq) const {
    return audit::Head{seq, test::json_string(parse(lines[seq - 1]), "hash")};
  }

  std::vector<std::string> lines;
  std::string text;
};

TEST_F(AuditVerifyTest, AnIntactLogVerifiesWithAndWithoutACheckpoint) {
  EXPECT_TRUE(verify(lines).intact());
  const audit::Report report = verify(lines, head_at(7));
  EXPECT_TRUE(report.intact()) << report.detail;
  EXPECT_TRUE(report.checkpoint_checked);
  EXPECT_TRUE(audit::verify_audit({}).intact());
}

TEST_F(AuditVerifyTest, NamesAChangedEntry) {
  for (const std::size_t seq : {1u, 4u, 10u}) {
    auto changed = lines;
    // One flipped bit in the device id (never a line end), then one in the hash itself.
    std::string& line = changed[seq - 1];
    line[line.find(":\"dev") + 3] ^= 0x01;
    audit::Report report = verify(changed);
    EXPECT_EQ(report.problem, Problem::changed) << seq;
    EXPECT_EQ(report.seq, seq);
    EXPECT_EQ(report.line, seq);
    changed = lines;
    changed[seq - 1][changed[seq - 1].size() - 5] ^= 0x01;
    report = verify(changed);
    EXPECT_EQ(report.problem, Problem::changed) << seq;
    EXPECT_EQ(report.seq, seq);
  }
}

TEST_F(AuditVerifyTest, NamesAnEntryRewrittenWithARecomputedHash) {
  auto changed = lines;
  std::string& line = changed[4];
  line.replace(line.find("dev5"), 4, "evil");
  const std::size_t cut = line.rfind(",\"hash\":\"");
  line = line.substr(0, cut) + ",\"hash\":\"" + sha256(line.substr(0, cut) + "}") + "\"}";
  const audit::Report report = verify(changed);
  EXPECT_EQ(report.problem, Problem::changed);
  EXPECT_EQ(report.seq, 6u) << "the next entry no longer chains to it";
  // A checkpoint at the rewritten entry itself names it.
  const audit::Report against =
      verify(std::vector<std::string>(changed.begin(), changed.begin() + 5), head_at(5));
  EXPECT_EQ(against.problem, Problem::changed);
  EXPECT_EQ(against.seq, 5u);
}

TEST_F(AuditVerifyTest, NamesARemovedEntry) {
  for (const std::size_t seq : {1u, 2u, 6u}) {
    auto changed = lines;
    changed.erase(changed.begin() + static_cast<std::ptrdiff_t>(seq - 1));
    const audit::Report report = verify(changed);
    EXPECT_EQ(report.problem, Problem::removed) << seq << ": " << report.detail;
    EXPECT_EQ(report.seq, seq);
  }
  auto changed = lines;
  changed.erase(changed.begin() + 3, changed.begin() + 6);
  const audit::Report report = verify(changed);
  EXPECT_EQ(report.problem, Problem::removed);
  EXPECT_EQ(report.seq, 4u);
  EXPECT_NE(report.detail.find("seq 4 to 6"), std::string::npos) << report.detail;
}

TEST_F(AuditVerifyTest, NamesReorderedEntries) {
  auto changed = lines;
  std::swap(changed[2], changed[3]);
  audit::Report report = verify(changed);
  EXPECT_EQ(report.problem, Problem::reordered) << report.detail;
  EXPECT_EQ(report.seq, 3u);
  changed = lines;
  changed.insert(changed.begin() + 6, lines[2]);  // seq 3 again after seq 6
  report = verify(changed);
  EXPECT_EQ(report.problem, Problem::reordered);
  EXPECT_EQ(report.seq, 7u);
}

TEST_F(AuditVerifyTest, NamesTruncationAgainstACheckpointAndATornTail) {
  const std::vector<std::string> head(lines.begin(), lines.begin() + 6);
  EXPECT_TRUE(verify(head).intact()) << "the chain alone cannot see entries cut from its end";
  audit::Report report = verify(head, head_at(9));
  EXPECT_EQ(report.problem, Problem::truncated);
  EXPECT_EQ(report.seq, 7u);
  report = verify({}, head_at(9));
  EXPECT_EQ(report.problem, Problem::truncated);
  EXPECT_EQ(report.seq, 1u);
  // Cut in the middle of a line.
  text = join(head) + lines[6].substr(0, 40);
  report = audit::verify_audit({text});
  EXPECT_EQ(report.problem, Problem::torn);
  EXPECT_EQ(report.seq, 7u);
  // A checkpoint whose hash is not the log's at that seq.
  audit::Head other = head_at(4);
  other.hash[0] = other.hash[0] == 'a' ? 'b' : 'a';
  report = verify(lines, other);
  EXPECT_EQ(report.problem, Problem::changed);
  EXPECT_EQ(report.seq, 4u);
}

TEST_F(AuditVerifyTest, ChainsAcrossFilesAndFindsAMissingOne) {
  const std::string older = join({lines.begin(), lines.begin() + 4});
  const std::string middle = join({lines.begin() + 4, lines.begin() + 7});
  const std::string newest = join({lines.begin() + 7, lines.end()});
  EXPECT_TRUE(audit::verify_audit({older, middle, newest}).intact());
  const audit::Report report = audit::verify_audit({older, newest});
  EXPECT_EQ(report.problem, Problem::removed);
  EXPECT_EQ(report.seq, 5u);
  EXPECT_EQ(report.file, 1u);
  EXPECT_EQ(report.line, 1u);
  // Only the file being written may end in a torn line.
  const audit::Report torn = audit::verify_audit({older.substr(0, older.size() - 3), newest});
  EXPECT_EQ(torn.problem, Problem::changed);
  EXPECT_EQ(torn.seq, 4u);
}

TEST_F(AuditVerifyTest, GarbageIsAProblemNeverACrash) {
  for (const std::string& input :
       {std::string("\n"), std::string("{}\n"), std::string("\0\0\0", 3), std::string("[[[[\n"),
        std::string("{\"seq\":1,\"hash\":\"") + std::string(64, 'a') + "\"}\n"}) {
    const audit::Report report = audit::verify_audit({input});
    EXPECT_FALSE(report.intact()) << input;
  }
}

// --- Checkpoint signatures (JWS RS256).

class JwsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pair = new keystore::KeyPair(keystore::generate_key_pair(keystore::KeyType::rsa2048));
    other = new keystore::KeyPair(keystore::generate_key_pair(keystore::KeyType::rsa2048));
  }
  static void TearDownTestSuite() {
    delete pair;
    delete other;
  }
  static keystore::KeyPair* pair;
  static keystore::KeyPair* other;
};
keystore::KeyPair* JwsTest::pair = nullptr;
keystore::KeyPair* JwsTest::other = nullptr;

TEST_F(JwsTest, SignsACompactRs256WithTheKidAndVerifiesIt) {
  const std::string payload = R"({"seq":100,"hash":")" + std::string(64, 'c') + "\"}";
  const std::string kid = keystore::fingerprint(pair->public_pem);
  const std::string jws = audit::jws_rs256(payload, pair->private_pem, kid);
  EXPECT_EQ(std::count(jws.begin(), jws.end(), '.'), 2);
  EXPECT_EQ(jws.find_first_of("=+/ \n"), std::string::npos) << "base64url without padding";
  const auto header = audit::base64url_decode(jws.substr(0, jws.find('.')));
  ASSERT_TRUE(header);
  EXPECT_EQ(*header, R"({"alg":"RS256","kid":")" + kid + "\"}");
  const auto verified = audit::jws_rs256_verify(jws, pair->public_pem);
  ASSERT_TRUE(verified);
  EXPECT_EQ(*verified, payload);

  std::string why;
  EXPECT_FALSE(audit::jws_rs256_verify(jws, other->public_pem, &why));
  EXPECT_NE(why.find("does not verify"), std::string::npos) << why;
  // Another payload under the same signature.
  const std::size_t dot = jws.find('.');
  const std::string forged =
      jws.substr(0, dot + 1) +
      audit::base64url_encode(R"({"seq":101,"hash":")" + std::string(64, 'c') + "\"}") +
      jws.substr(jws.rfind('.'));
  EXPECT_FALSE(audit::jws_rs256_verify(forged, pair->public_pem));
  EXPECT_FALSE(audit::jws_rs256_verify("a.b", pair->public_pem));
  EXPECT_FALSE(audit::jws_rs256_verify(jws + "=", pair->public_pem));
}

TEST_F(JwsTest, AnEcKeyCannotSign) {
  const auto ec = keystore::generate_key_pair(keystore::KeyType::ec_p256);
  EXPECT_THROW(audit::jws_rs256("{}", ec.private_pem, "kid"), keystore::KeyError);
}

TEST_F(JwsTest, ACheckpointVerifiesOnlyWithItsOwnSeqAndHash) {
  const audit::Head head{200, std::string(64, 'd')};
  const std::string message = audit::checkpoint_message(
      head, audit::jws_rs256(audit::checkpoint_payload(head), pair->private_pem, "kid"));
  EXPECT_EQ(message.substr(0, 20), R"({"seq":200,"hash":"d)");
  auto checkpoint = audit::parse_checkpoint(message);
  ASSERT_TRUE(checkpoint);
  EXPECT_EQ(checkpoint->head.seq, 200u);
  EXPECT_TRUE(audit::verify_checkpoint_signature(*checkpoint, pair->public_pem));
  EXPECT_FALSE(audit::verify_checkpoint_signature(*checkpoint, other->public_pem));
  checkpoint->head.seq = 300;  // the signature names seq 200
  std::string why;
  EXPECT_FALSE(audit::verify_checkpoint_signature(*checkpoint, pair->public_pem, &why));
  EXPECT_NE(why.find("another seq"), std::string::npos) << why;
  EXPECT_FALSE(audit::parse_checkpoint(R"({"seq":0,"hash":"x","signature":""})"));
  EXPECT_FALSE(audit::parse_checkpoint("not json"));
}

}  // namespace
}  // namespace pa
