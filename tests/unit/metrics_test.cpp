// The metrics registry and its textfile writer (SPEC section 8, issue 13): what node_exporter's
// textfile collector reads (checked by Prometheus's own promtool) and what the status shows.
#include "metrics/metrics.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <stdexcept>

#include "test_support.hpp"

namespace pa::metrics {
namespace {

namespace fs = std::filesystem;

// A registry with one family of each kind, values with characters the format must escape.
void fill(Registry& r) {
  r.declare("provision_agent_requests_total", Kind::counter, "Requests answered.\nBy outcome.");
  r.declare("provision_agent_queue_depth", Kind::gauge, "Requests waiting.");
  r.declare("provision_agent_key_generation_seconds", Kind::histogram, "Generation time.",
            {0.1, 1, 10});
  r.declare("provision_agent_info", Kind::gauge, "Version.", {}, false);
  r.add("provision_agent_requests_total", {{"action", "delete"}, {"outcome", "ok"}});
  r.add("provision_agent_requests_total", {{"action", "delete"}, {"outcome", "ok"}});
  r.add("provision_agent_requests_total", {{"action", "delete"}, {"outcome", "not_found"}});
  r.add("provision_agent_requests_total", {{"action", "other"}, {"outcome", "unknown_action"}});
  r.set("provision_agent_queue_depth", 3);
  r.observe("provision_agent_key_generation_seconds", {{"key_type", "rsa-2048"}}, 0.05);
  r.observe("provision_agent_key_generation_seconds", {{"key_type", "rsa-2048"}}, 2.5);
  r.set("provision_agent_info", {{"version", "1.0 \"beta\"\\x\ny"}}, 1);
}

std::string sample_text() {
  Registry r;
  fill(r);
  return r.text();
}

TEST(Metrics, TextFormat) {
  const std::string text = sample_text();
  EXPECT_NE(text.find("# HELP provision_agent_requests_total Requests answered.\\nBy outcome.\n"
                      "# TYPE provision_agent_requests_total counter\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("provision_agent_requests_total{action=\"delete\",outcome=\"ok\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("provision_agent_queue_depth 3\n"), std::string::npos);
  // Buckets are cumulative, +Inf is the count.
  for (const char* line :
       {"provision_agent_key_generation_seconds_bucket{key_type=\"rsa-2048\",le=\"0.1\"} 1\n",
        "provision_agent_key_generation_seconds_bucket{key_type=\"rsa-2048\",le=\"1\"} 1\n",
        "provision_agent_key_generation_seconds_bucket{key_type=\"rsa-2048\",le=\"10\"} 2\n",
        "provision_agent_key_generation_seconds_bucket{key_type=\"rsa-2048\",le=\"+Inf\"} 2\n",
        "provision_agent_key_generation_seconds_sum{key_type=\"rsa-2048\"} 2.55\n",
        "provision_agent_key_generation_seconds_count{key_type=\"rsa-2048\"} 2\n",
        "provision_agent_info{version=\"1.0 \\\"beta\\\"\\\\x\\ny\"} 1\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin\n" << text;
}

// Prometheus's own parser and linter (Debian package prometheus, scripts/deps.sh).
TEST(Metrics, PromtoolAcceptsTheText) {
  test::TempDir dir;
  test::write_file(dir.file("agent.prom"), sample_text());
  const auto result =
      test::run_command("promtool check metrics < " + test::shell_quote(dir.file("agent.prom")));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output, "") << "promtool's lint found something";
}

TEST(Metrics, StatusJsonNestsByLabelValue) {
  Registry r;
  fill(r);
  const auto json = test::parse_json(r.json());
  ASSERT_FALSE(json.HasParseError());
  ASSERT_TRUE(json.IsObject());
  EXPECT_FALSE(json.HasMember("info")) << "declared out of the status";
  EXPECT_EQ(json["queue_depth"].GetInt64(), 3);
  EXPECT_EQ(json["requests_total"]["delete"]["ok"].GetInt64(), 2);
  EXPECT_EQ(json["requests_total"]["delete"]["not_found"].GetInt64(), 1);
  EXPECT_EQ(json["requests_total"]["other"]["unknown_action"].GetInt64(), 1);
  EXPECT_EQ(json["key_generation_seconds"]["rsa-2048"]["count"].GetUint64(), 2u);
  EXPECT_DOUBLE_EQ(json["key_generation_seconds"]["rsa-2048"]["sum"].GetDouble(), 2.55);
}

TEST(Metrics, RefusesBadDeclarationsAndMisuse) {
  Registry r;
  EXPECT_THROW(r.declare("requests", Kind::counter, "no _total"), std::invalid_argument);
  EXPECT_THROW(r.declare("depth_total", Kind::gauge, "a gauge named like a counter"),
               std::invalid_argument);
  EXPECT_THROW(r.declare("bad-name", Kind::gauge, "x"), std::invalid_argument);
  EXPECT_THROW(r.declare("h", Kind::histogram, "no buckets"), std::invalid_argument);
  r.declare("g", Kind::gauge, "x");
  EXPECT_THROW(r.declare("g", Kind::gauge, "twice"), std::invalid_argument);
  EXPECT_THROW(r.add("g"), std::logic_error);
  EXPECT_THROW(r.set("missing", 1), std::logic_error);
  EXPECT_THROW(r.set("g", {{"bad-label", "x"}}, 1), std::logic_error);
}

TEST(Metrics, CountersKeptElsewhereNeverGoBackAndVersionsMove) {
  Registry r;
  r.declare("c_total", Kind::counter, "x");
  r.set("c_total", 5);
  const auto version = r.version();
  r.set("c_total", 3);
  EXPECT_EQ(r.value("c_total"), 5);
  EXPECT_EQ(r.version(), version);
  r.add("c_total");
  EXPECT_EQ(r.value("c_total"), 6);
  EXPECT_GT(r.version(), version);
}

TEST(Metrics, GaugeFamiliesAreReplacedWhole) {
  Registry r;
  r.declare("keys", Kind::gauge, "x");
  r.replace("keys", {{{{"key_type", "rsa-2048"}}, 2}, {{{"key_type", "ec-p256"}}, 1}});
  r.replace("keys", {{{{"key_type", "ec-p256"}}, 4}});
  EXPECT_EQ(r.value("keys", {{"key_type", "rsa-2048"}}), 0);
  EXPECT_EQ(r.text().find("rsa-2048"), std::string::npos);
  EXPECT_EQ(r.value("keys", {{"key_type", "ec-p256"}}), 4);
}

TEST(TextfileWriter, WritesReadableFileAtomicallyAndCleansUp) {
  test::TempDir dir;
  const std::string path = dir.file("provision_agent.prom");
  // A temporary file left by a crash mid-write goes when the writer starts.
  test::write_file(dir.file(".provision_agent.prom.tmp-abc123"), "half", 0600);
  Registry registry;
  fill(registry);
  int collected = 0;
  {
    TextfileWriter writer(
        path, registry, [&] { ++collected; },
        TextfileWriter::Timing{std::chrono::hours(1), std::chrono::hours(1)});
    ASSERT_TRUE(writer.write_now());
    EXPECT_EQ(test::read_file(path), registry.text());
    registry.set("provision_agent_queue_depth", 7);
  }  // the last write on the way out
  EXPECT_NE(test::read_file(path).find("provision_agent_queue_depth 7\n"), std::string::npos);
  EXPECT_GE(collected, 2);
  EXPECT_EQ(test::file_mode(path), 0644) << "node_exporter runs as another user";
  EXPECT_EQ(test::list_tree(dir.path()), std::vector<std::string>{"provision_agent.prom"});
}

TEST(TextfileWriter, AnUnwritableFolderIsNotFatal) {
  test::TempDir dir;
  Registry registry;
  fill(registry);
  TextfileWriter writer(dir.file("missing/agent.prom"), registry, {});
  EXPECT_FALSE(writer.write_now());
  fs::create_directory(dir.file("missing"));
  EXPECT_TRUE(writer.write_now());
}

}  // namespace
}  // namespace pa::metrics
