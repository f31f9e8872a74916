#pragma once
// The agent's counters (SPEC section 8, issue 13): one registry, shown two ways: the Prometheus
// text format for node_exporter's textfile collector (PROVISION_METRICS_FILE, written by
// TextfileWriter) and a JSON object for the retained status message. No listening port.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace pa::metrics {

enum class Kind { counter, gauge, histogram };

// Label values by label name, in the family's label order.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Registry {
 public:
  // Declares a family before it is used. `name` and label names must be Prometheus names
  // ([a-zA-Z_][a-zA-Z0-9_]*); a counter's name ends in _total. `in_status`: also in json().
  // Throws std::invalid_argument for a bad name or a second declaration.
  void declare(const std::string& name, Kind kind, const std::string& help,
               std::vector<double> buckets = {}, bool in_status = true);

  // Thread-safe; an undeclared name or the wrong kind throws std::logic_error (a bug, not input).
  void add(std::string_view name, const Labels& labels = {}, double amount = 1);  // counter
  // A gauge, or a counter kept elsewhere (its current value, never lower than before).
  void set(std::string_view name, const Labels& labels, double value);
  void set(std::string_view name, double value) { set(name, {}, value); }
  // Replaces every series of a gauge family (a key type that disappeared goes away).
  void replace(std::string_view name, const std::vector<std::pair<Labels, double>>& series);
  void observe(std::string_view name, const Labels& labels, double value);  // histogram

  // A counter's or gauge's value, a histogram's count; 0 when the series does not exist.
  double value(std::string_view name, const Labels& labels = {}) const;
  // Changes with every update, so a writer can tell whether anything moved.
  std::uint64_t version() const;

  // The Prometheus text exposition format (version 0.0.4), families and series sorted.
  std::string text() const;
  // {"<name without provision_agent_>": value | {"<label value>": ...}}; histograms as
  // {"count","sum"}. Families declared with in_status = false are left out.
  std::string json() const;

 private:
  struct Series {
    double value = 0;                   // counter, gauge
    std::vector<std::uint64_t> counts;  // histogram: per bucket (not cumulative)
    std::uint64_t count = 0;
    double sum = 0;
  };
  struct Family {
    Kind kind;
    std::string help;
    std::vector<double> buckets;
    bool in_status;
    std::map<Labels, Series> series;
  };
  Family& family_locked(std::string_view name, Kind kind);

  mutable std::mutex mutex_;
  std::map<std::string, Family, std::less<>> families_;
  std::uint64_t version_ = 0;
};

// PROVISION_METRICS_FILE (SPEC section 8): the registry's text format written to a temporary
// name in the same folder and renamed over the file (as node_exporter's textfile collector
// expects: it never reads half a file; temporary names do not end in .prom), mode 0644 so the
// collector's user reads it. On its own thread, which samples the registry every `interval` and
// writes when something moved, and every `refresh` anyway so that the file's mtime shows the
// agent is alive. A failure is logged once per distinct reason, never fatal.
class TextfileWriter {
 public:
  struct Timing {
    std::chrono::milliseconds interval{2000};
    std::chrono::milliseconds refresh{60000};
  };
  // `collect` refreshes the sampled values in `registry` just before each look.
  TextfileWriter(std::filesystem::path path, Registry& registry, std::function<void()> collect,
                 Timing timing);
  TextfileWriter(std::filesystem::path path, Registry& registry, std::function<void()> collect)
      : TextfileWriter(std::move(path), registry, std::move(collect), Timing{}) {}
  TextfileWriter(const TextfileWriter&) = delete;
  TextfileWriter& operator=(const TextfileWriter&) = delete;
  ~TextfileWriter();  // one last write, then the thread stops

  // Collects and writes now, on the calling thread; false (logged) when it could not.
  bool write_now();

 private:
  void run();
  bool write_collected();

  const std::filesystem::path path_;
  Registry& registry_;
  std::function<void()> collect_;
  const Timing timing_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::mutex write_mutex_;  // one write at a time; guards what follows
  std::optional<std::uint64_t> written_version_;
  std::chrono::steady_clock::time_point written_at_{};
  std::string last_error_;
  std::thread thread_;
};

}  // namespace pa::metrics
