#include "metrics/metrics.hpp"

#include <fmt/format.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <system_error>

#include "base/log.hpp"
#include "keystore/file_util.hpp"

namespace pa::metrics {
namespace {

constexpr std::string_view kPrefix = "provision_agent_";

bool is_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool ends_with(std::string_view text, std::string_view end) {
  return text.size() >= end.size() && text.substr(text.size() - end.size()) == end;
}

// Label values: backslash, double quote and line feed escaped (the text format's rules).
std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

// HELP text: backslash and line feed escaped.
std::string escape_help(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  return fmt::format("{}", value);
}

void check_labels(const Labels& labels) {
  for (const auto& [label, value] : labels)
    if (!is_metric_name(label) || label == "le")
      throw std::logic_error("invalid label name " + label);
}

std::string label_text(const Labels& labels, const std::optional<std::string>& le = std::nullopt) {
  if (labels.empty() && !le) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += name + "=\"" + escape_label_value(value) + "\"";
  }
  if (le) out += std::string(first ? "" : ",") + "le=\"" + *le + "\"";
  return out + "}";
}

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void json_number(JsonWriter& writer, double value) {
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9.0e15)
    writer.Int64(static_cast<std::int64_t>(value));
  else if (std::isfinite(value))
    writer.Double(value);
  else
    writer.Null();
}

}  // namespace

void Registry::declare(const std::string& name, Kind kind, const std::string& help,
                       std::vector<double> buckets, bool in_status) {
  if (!is_metric_name(name)) throw std::invalid_argument("invalid metric name " + name);
  if ((kind == Kind::counter) != ends_with(name, "_total"))
    throw std::invalid_argument("a counter's name, and only a counter's, ends in _total: " + name);
  if (kind == Kind::histogram && buckets.empty())
    throw std::invalid_argument("a histogram needs buckets: " + name);
  std::sort(buckets.begin(), buckets.end());
  std::lock_guard lock(mutex_);
  if (!families_.emplace(name, Family{kind, help, std::move(buckets), in_status, {}}).second)
    throw std::invalid_argument("metric declared twice: " + name);
}

Registry::Family& Registry::family_locked(std::string_view name, Kind kind) {
  const auto it = families_.find(name);
  if (it == families_.end()) throw std::logic_error("undeclared metric " + std::string(name));
  if (it->second.kind != kind && !(kind == Kind::gauge && it->second.kind == Kind::counter))
    throw std::logic_error("metric " + std::string(name) + " used as another kind");
  return it->second;
}

void Registry::add(std::string_view name, const Labels& labels, double amount) {
  check_labels(labels);
  std::lock_guard lock(mutex_);
  Family& family = family_locked(name, Kind::counter);
  family.series[labels].value += amount;
  ++version_;
}

void Registry::set(std::string_view name, const Labels& labels, double value) {
  check_labels(labels);
  std::lock_guard lock(mutex_);
  Family& family = family_locked(name, Kind::gauge);
  Series& series = family.series[labels];
  // A counter kept elsewhere never goes down (a restart of its source would look like a reset).
  if (family.kind == Kind::counter && value < series.value) return;
  if (series.value != value) ++version_;
  series.value = value;
}

void Registry::replace(std::string_view name,
                       const std::vector<std::pair<Labels, double>>& series) {
  for (const auto& entry : series) check_labels(entry.first);
  std::lock_guard lock(mutex_);
  Family& family = family_locked(name, Kind::gauge);
  std::map<Labels, Series> next;
  for (const auto& [labels, value] : series) next[labels].value = value;
  bool same = next.size() == family.series.size();
  for (auto a = next.begin(), b = family.series.begin(); same && a != next.end(); ++a, ++b)
    same = a->first == b->first && a->second.value == b->second.value;
  if (same) return;
  family.series = std::move(next);
  ++version_;
}

void Registry::observe(std::string_view name, const Labels& labels, double value) {
  check_labels(labels);
  std::lock_guard lock(mutex_);
  Family& family = family_locked(name, Kind::histogram);
  Series& series = family.series[labels];
  if (series.counts.empty()) series.counts.assign(family.buckets.size(), 0);
  for (std::size_t i = 0; i < family.buckets.size(); ++i) {
    if (value <= family.buckets[i]) {
      ++series.counts[i];
      break;
    }
  }
  ++series.count;
  series.sum += value;
  ++version_;
}

double Registry::value(std::string_view name, const Labels& labels) const {
  std::lock_guard lock(mutex_);
  const auto family = families_.find(name);
  if (family == families_.end()) return 0;
  const auto series = family->second.series.find(labels);
  if (series == family->second.series.end()) return 0;
  return family->second.kind == Kind::histogram ? static_cast<double>(series->second.count)
                                                : series->second.value;
}

std::uint64_t Registry::version() const {
  std::lock_guard lock(mutex_);
  return version_;
}

std::string Registry::text() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) {
    const char* type = family.kind == Kind::counter ? "counter"
                       : family.kind == Kind::gauge ? "gauge"
                                                    : "histogram";
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(family.help), name, type);
    for (const auto& [labels, series] : family.series) {
      if (family.kind != Kind::histogram) {
        out += fmt::format("{}{} {}\n", name, label_text(labels), number(series.value));
        continue;
      }
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < family.buckets.size(); ++i) {
        cumulative += series.counts.empty() ? 0 : series.counts[i];
        out += fmt::format("{}_bucket{} {}\n", name, label_text(labels, number(family.buckets[i])),
                           cumulative);
      }
      out += fmt::format("{}_bucket{} {}\n", name, label_text(labels, std::string("+Inf")),
                         series.count);
      out += fmt::format("{}_sum{} {}\n", name, label_text(labels), number(series.sum));
      out += fmt::format("{}_count{} {}\n", name, label_text(labels), series.count);
    }
  }
  return out;
}

std::string Registry::json() const {
  std::lock_guard lock(mutex_);
  rapidjson::StringBuffer buffer;
  JsonWriter writer(buffer);
  writer.StartObject();
  for (const auto& entry : families_) {
    // Not a structured binding: C++17 lambdas cannot capture one (clang refuses).
    const std::string& name = entry.first;
    const auto& family = entry.second;
    if (!family.in_status) continue;
    std::string_view key = name;
    if (key.substr(0, kPrefix.size()) == kPrefix) key.remove_prefix(kPrefix.size());
    writer.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()));
    auto leaf = [&](const Series& series) {
      if (family.kind != Kind::histogram) return json_number(writer, series.value);
      writer.StartObject();
      writer.Key("count");
      writer.Uint64(series.count);
      writer.Key("sum");
      writer.Double(series.sum);
      writer.EndObject();
    };
    if (family.series.size() == 1 && family.series.begin()->first.empty()) {
      leaf(family.series.begin()->second);
      continue;
    }
    // Nested objects by label value, in label order; the series are sorted, so equal prefixes
    // are adjacent.
    writer.StartObject();
    std::vector<std::string> open;  // the label values of the objects now open
    for (const auto& [labels, series] : family.series) {
      std::size_t common = 0;
      while (common < open.size() && common + 1 < labels.size() &&
             open[common] == labels[common].second)
        ++common;
      while (open.size() > common) {
        writer.EndObject();
        open.pop_back();
      }
      for (std::size_t depth = open.size(); depth + 1 < labels.size(); ++depth) {
        const std::string& value = labels[depth].second;
        writer.Key(value.data(), static_cast<rapidjson::SizeType>(value.size()));
        writer.StartObject();
        open.push_back(value);
      }
      const std::string& last = labels.empty() ? std::string() : labels.back().second;
      writer.Key(last.data(), static_cast<rapidjson::SizeType>(last.size()));
      leaf(series);
    }
    while (!open.empty()) {
      writer.EndObject();
      open.pop_back();
    }
    writer.EndObject();
  }
  writer.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

TextfileWriter::TextfileWriter(std::filesystem::path path, Registry& registry,
                               std::function<void()> collect, Timing timing)
    : path_(std::move(path)), registry_(registry), collect_(std::move(collect)), timing_(timing) {
  try {
    keystore::remove_stale_temp_files(path_);  // left by a crash mid-write
  } catch (const std::system_error&) {
    // The first write says what is wrong with the folder.
  }
  thread_ = std::thread([this] { run(); });
}

TextfileWriter::~TextfileWriter() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  write_now();
}

bool TextfileWriter::write_now() {
  std::lock_guard lock(write_mutex_);
  if (collect_) collect_();
  return write_collected();
}

bool TextfileWriter::write_collected() {
  const std::uint64_t version = registry_.version();
  std::string problem;
  try {
    keystore::write_file_atomic(path_, registry_.text(), 0644);
  } catch (const std::system_error& error) {
    problem = error.what();
  }
  if (problem.empty()) {
    if (!last_error_.empty()) log_info("metrics: writing {} again", path_.string());
    last_error_.clear();
    written_version_ = version;
    written_at_ = std::chrono::steady_clock::now();
    return true;
  }
  if (problem != last_error_)
    log_warning("metrics: cannot write PROVISION_METRICS_FILE={}: {}", path_.string(), problem);
  last_error_ = problem;
  return false;
}

void TextfileWriter::run() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    lock.unlock();
    {
      std::lock_guard writing(write_mutex_);
      if (collect_) collect_();
      if (registry_.version() != written_version_ ||
          std::chrono::steady_clock::now() - written_at_ >= timing_.refresh)
        write_collected();
    }
    lock.lock();
    wake_.wait_for(lock, timing_.interval, [&] { return stop_; });
  }
}

}  // namespace pa::metrics
