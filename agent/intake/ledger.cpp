#include "intake/ledger.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <system_error>
#include <vector>

#include "base/log.hpp"

namespace pa {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSnapshotFile = "ledger.json";
constexpr const char* kJournalFile = "ledger.journal";
// What an earlier version kept: ids recorded on arrival, which cannot be turned into records.
constexpr const char* kRetiredFiles[] = {"replay.json", "replay.journal"};

// The identity of a request for retries: request_id, else nonce (SPEC 3.1), per device.
std::optional<std::string> id_key(const Request& request) {
  const std::optional<std::string>& id =
      request.request_id && !request.request_id->empty() ? request.request_id : request.nonce;
  if (!id || id->empty()) return std::nullopt;
  return request.device_id + '\n' + *id;
}

std::string_view id_of(const std::string& key) {
  return std::string_view(key).substr(key.find('\n') + 1);
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write");
    }
    data.remove_prefix(static_cast<std::size_t>(written));
  }
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void put(Writer& w, const char* key, std::string_view value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

std::optional<std::string> get_string(const rapidjson::Value& object, const char* key) {
  const auto it = object.FindMember(key);
  if (it == object.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

std::optional<std::int64_t> get_int(const rapidjson::Value& object, const char* key) {
  const auto it = object.FindMember(key);
  if (it == object.MemberEnd() || !it->value.IsInt64()) return std::nullopt;
  return it->value.GetInt64();
}

std::optional<std::uint64_t> get_uint(const rapidjson::Value& object, const char* key) {
  const auto it = object.FindMember(key);
  if (it == object.MemberEnd() || !it->value.IsUint64()) return std::nullopt;
  return it->value.GetUint64();
}

bool same(const SpoolPosition& a, const SpoolPosition& b) {
  return a.epoch != 0 && a.epoch == b.epoch && a.seq == b.seq;
}

}  // namespace

// One completion: what record() learnt, and what a journal line holds.
struct RequestLedger::Entry {
  std::int64_t time = 0;
  std::string device;
  SpoolPosition at;
  std::optional<std::string> id_key;  // with its record:
  std::string digest;
  std::string response;
  bool published_key = false;
  std::uint64_t watermark = 0;
  std::optional<std::int64_t> ts_us;         // the request's ts
  std::optional<std::string> replay_digest;  // an id-less, ts-less update or delete
};

RequestLedger::RequestLedger(fs::path state_dir, std::int64_t max_skew_seconds, LedgerLimits limits)
    : state_dir_(std::move(state_dir)), max_skew_(max_skew_seconds), limits_(limits) {
  if (state_dir_.empty()) return;
  keystore::create_private_dirs(state_dir_, 0700);
  for (const char* retired : kRetiredFiles) {
    std::error_code ignored;
    if (fs::remove(state_dir_ / retired, ignored))
      log_info("removed {} (the replay memory of an earlier version)",
               (state_dir_ / retired).string());
  }
  // A crash while ledger.json was folded or the journal repaired leaves their copies.
  for (const char* file : {kSnapshotFile, kJournalFile})
    keystore::remove_stale_temp_files(state_dir_ / file);
  load();
}

std::size_t RequestLedger::remembered_ids() const {
  std::lock_guard lock(mutex_);
  return ids_.size();
}

LedgerVerdict RequestLedger::check(const Request& request, const SpoolPosition& at,
                                   bool destructive, std::int64_t now_us) {
  using Kind = LedgerVerdict::Kind;
  const std::int64_t now = now_us / 1000000;
  std::lock_guard lock(mutex_);
  prune(now);

  const std::optional<std::string> key = id_key(request);
  if (key) {
    const auto it = ids_.find(*key);
    // An entry older than its lifetime that pruning has not reached yet (the clock stepped
    // back, so a newer-dated entry is ahead of it in the queue) counts as gone.
    if (it != ids_.end() && it->second.time >= now - limits_.record_seconds) {
      const IdRecord& record = it->second;
      LedgerVerdict verdict;
      verdict.response = record.response;
      verdict.published_key = record.published_key;
      if (same(record.at, at)) {
        verdict.kind = Kind::same_message;
      } else if (record.digest != request.content_digest) {
        verdict.kind = Kind::replay;
        verdict.reason = "id_reused";
        verdict.message =
            fmt::format("{} \"{}\" was already used by a different request for this device",
                        request.request_id && !request.request_id->empty() ? "request_id" : "nonce",
                        id_of(*key));
      } else if (record.at.epoch == at.epoch && at.seq <= record.watermark) {
        verdict.kind = Kind::in_flight;
      } else {
        verdict.kind = Kind::duplicate;
      }
      return verdict;
    }
  }

  if (request.ts && (*request.ts < now - max_skew_ || *request.ts > now + max_skew_)) {
    const std::int64_t behind = now - *request.ts;
    return LedgerVerdict{
        Kind::replay,
        "timestamp_outside_window",
        fmt::format("ts {} is {} s {} the agent's clock; PROVISION_MAX_SKEW allows {} s",
                    *request.ts, behind >= 0 ? behind : -behind,
                    behind >= 0 ? "behind" : "ahead of", max_skew_),
        {},
        false};
  }
  if (!key && request.ts_us) {
    const auto last = last_ts_.find(request.device_id);
    if (last != last_ts_.end() && !same(last->second.at, at) &&
        *request.ts_us <= last->second.value)
      return LedgerVerdict{
          Kind::replay,
          "timestamp_not_newer",
          fmt::format("the request's time is not newer than that of the last request served "
                      "for this device"),
          {},
          false};
  }
  if (!key && !request.ts_us && destructive) {
    const auto recent = digests_.find(request.content_digest);
    if (recent != digests_.end() && recent->second.value >= now - limits_.duplicate_seconds &&
        !same(recent->second.at, at))
      return LedgerVerdict{
          Kind::replay,
          "duplicate_message",
          fmt::format("the same {} was served less than {} s ago (add a request_id or ts to "
                      "repeat it on purpose)",
                      request.action, limits_.duplicate_seconds),
          {},
          false};
  }
  return LedgerVerdict{};
}

void RequestLedger::record(const Request& request, const SpoolPosition& at, std::uint64_t watermark,
                           std::string_view response, bool published_key, bool destructive,
                           std::int64_t now_us) {
  Entry entry;
  entry.time = now_us / 1000000;
  entry.device = request.device_id;
  entry.at = at;
  entry.id_key = id_key(request);
  if (entry.id_key) {
    entry.digest = request.content_digest;
    entry.response = std::string(response);
    entry.published_key = published_key;
    entry.watermark = watermark;
  }
  entry.ts_us = request.ts_us;
  if (!entry.id_key && !request.ts_us && destructive) entry.replay_digest = request.content_digest;
  if (!entry.id_key && !entry.ts_us && !entry.replay_digest) return;

  std::lock_guard lock(mutex_);
  apply(entry);
  prune(entry.time);
  persist(entry);
}

void RequestLedger::apply(const Entry& entry) {
  if (entry.id_key) {
    ids_[*entry.id_key] = IdRecord{entry.digest, entry.response,  entry.published_key,
                                   entry.at,     entry.watermark, entry.time};
    id_order_.emplace_back(entry.time, *entry.id_key);
  }
  if (entry.ts_us) {
    auto [it, inserted] = last_ts_.try_emplace(entry.device, Stamp{*entry.ts_us, entry.at});
    if (!inserted && *entry.ts_us >= it->second.value) it->second = Stamp{*entry.ts_us, entry.at};
  }
  if (entry.replay_digest) {
    digests_[*entry.replay_digest] = Stamp{entry.time, entry.at};
    digest_order_.emplace_back(entry.time, *entry.replay_digest);
  }
}

void RequestLedger::prune(std::int64_t now) {
  // The order queues may hold stale entries for a key recorded again later; a queue entry removes
  // its map entry only when the times agree.
  auto drop = [](auto& map, auto& order, std::int64_t cutoff, std::size_t bound, auto time_of) {
    while (!order.empty() && (order.front().first < cutoff || order.size() > bound)) {
      const auto it = map.find(order.front().second);
      if (it != map.end() && time_of(it->second) == order.front().first) map.erase(it);
      order.pop_front();
    }
  };
  drop(ids_, id_order_, now - limits_.record_seconds, limits_.max_records,
       [](const IdRecord& record) { return record.time; });
  drop(digests_, digest_order_, now - limits_.duplicate_seconds, limits_.max_digests,
       [](const Stamp& stamp) { return stamp.value; });
  // A last ts older than the window refuses nothing the window lets through.
  if (last_ts_.size() > limits_.max_devices) {
    const std::int64_t window_start_us = (now - max_skew_) * 1000000;
    for (auto it = last_ts_.begin(); it != last_ts_.end();)
      it = it->second.value < window_start_us ? last_ts_.erase(it) : std::next(it);
    while (last_ts_.size() > limits_.max_devices)
      last_ts_.erase(std::min_element(last_ts_.begin(), last_ts_.end(), [](auto& a, auto& b) {
        return a.second.value < b.second.value;
      }));
  }
}

namespace {

void write_position(Writer& w, const SpoolPosition& at) {
  w.Key("e");
  w.Uint64(at.epoch);
  w.Key("s");
  w.Uint64(at.seq);
}

SpoolPosition read_position(const rapidjson::Value& object) {
  return SpoolPosition{get_uint(object, "e").value_or(0), get_uint(object, "s").value_or(0)};
}

}  // namespace

void RequestLedger::persist(const Entry& entry) {
  if (state_dir_.empty()) return;
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("t");
  w.Int64(entry.time);
  put(w, "device", entry.device);
  write_position(w, entry.at);
  if (entry.id_key) {
    put(w, "id", id_of(*entry.id_key));
    put(w, "digest", entry.digest);
    put(w, "response", entry.response);
    w.Key("published_key");
    w.Bool(entry.published_key);
    w.Key("w");
    w.Uint64(entry.watermark);
  }
  if (entry.ts_us) {
    w.Key("ts_us");
    w.Int64(*entry.ts_us);
  }
  if (entry.replay_digest) put(w, "replay_digest", *entry.replay_digest);
  w.EndObject();
  try {
    if (journal_lines_ >= limits_.journal_max) {
      // Fold the journal into the snapshot; a crash before the truncation only replays lines
      // the snapshot already holds.
      keystore::write_file_atomic(state_dir_ / kSnapshotFile, snapshot(), 0600);
      if (journal_ && ::ftruncate(journal_.get(), 0) != 0)
        throw std::system_error(errno, std::generic_category(), "truncate");
      journal_lines_ = 0;
    }
    if (!journal_) {
      const fs::path path = state_dir_ / kJournalFile;
      journal_.reset(
          ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!journal_) throw std::system_error(errno, std::generic_category(), "open");
      keystore::fsync_dir(state_dir_);
    }
    write_all(journal_.get(), std::string(buffer.GetString(), buffer.GetSize()) + "\n");
    if (::fdatasync(journal_.get()) != 0)
      throw std::system_error(errno, std::generic_category(), "fdatasync");
    ++journal_lines_;
    write_failed_ = false;
  } catch (const std::system_error& e) {
    // The ledger still works from memory; only a restart would forget.
    if (!write_failed_)
      log_error("cannot save the request ledger in {}: {}", state_dir_.string(), e.what());
    write_failed_ = true;
    journal_.reset();
  }
}

std::string RequestLedger::snapshot() const {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("version");
  w.Int(1);
  w.Key("ids");
  w.StartArray();
  for (const auto& [time, key] : id_order_) {
    const auto it = ids_.find(key);
    if (it == ids_.end() || it->second.time != time) continue;
    const IdRecord& record = it->second;
    w.StartObject();
    w.Key("t");
    w.Int64(record.time);
    put(w, "device", std::string_view(key).substr(0, key.find('\n')));
    put(w, "id", id_of(key));
    put(w, "digest", record.digest);
    put(w, "response", record.response);
    w.Key("published_key");
    w.Bool(record.published_key);
    write_position(w, record.at);
    w.Key("w");
    w.Uint64(record.watermark);
    w.EndObject();
  }
  w.EndArray();
  w.Key("last_ts");
  w.StartArray();
  for (const auto& [device, stamp] : last_ts_) {
    w.StartObject();
    put(w, "device", device);
    w.Key("ts_us");
    w.Int64(stamp.value);
    write_position(w, stamp.at);
    w.EndObject();
  }
  w.EndArray();
  w.Key("recent");
  w.StartArray();
  for (const auto& [time, digest] : digest_order_) {
    const auto it = digests_.find(digest);
    if (it == digests_.end() || it->second.value != time) continue;
    w.StartObject();
    w.Key("t");
    w.Int64(time);
    put(w, "replay_digest", digest);
    write_position(w, it->second.at);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize()) + "\n";
}

void RequestLedger::load() {
  auto read = [&](const char* name) -> std::string {
    const fs::path path = state_dir_ / name;
    std::error_code ec;
    if (!fs::exists(path, ec)) return {};
    try {
      return keystore::read_file(path);
    } catch (const std::system_error& e) {
      log_warning("cannot read the request ledger {}: {}", path.string(), e.what());
      return {};
    }
  };
  // Entries as the journal writes them; anything malformed is skipped (the ledger only ever
  // makes the agent answer a retry from memory, so forgetting is safe, inventing is not).
  auto entry_from = [&](const rapidjson::Value& object) -> std::optional<Entry> {
    if (!object.IsObject()) return std::nullopt;
    Entry entry;
    const auto time = get_int(object, "t");
    const auto device = get_string(object, "device");
    entry.at = read_position(object);
    entry.time = time.value_or(0);
    if (device) entry.device = *device;
    if (const auto id = get_string(object, "id")) {
      const auto digest = get_string(object, "digest");
      const auto response = get_string(object, "response");
      if (!time || !device || !digest || !response) return std::nullopt;
      entry.id_key = *device + '\n' + *id;
      entry.digest = *digest;
      entry.response = *response;
      const auto published = object.FindMember("published_key");
      entry.published_key = published != object.MemberEnd() && published->value.IsBool() &&
                            published->value.GetBool();
      entry.watermark = get_uint(object, "w").value_or(0);
    }
    if (const auto ts = get_int(object, "ts_us")) {
      if (!device) return std::nullopt;
      entry.ts_us = ts;
    }
    if (const auto digest = get_string(object, "replay_digest")) {
      if (!time) return std::nullopt;
      entry.replay_digest = digest;
    }
    return entry;
  };

  const std::string snapshot_text = read(kSnapshotFile);
  if (!snapshot_text.empty()) {
    rapidjson::Document doc;
    doc.Parse(snapshot_text.data(), snapshot_text.size());
    if (doc.HasParseError() || !doc.IsObject()) {
      log_warning("ignoring {}: not the JSON the agent writes",
                  (state_dir_ / kSnapshotFile).string());
    } else {
      for (const char* section : {"ids", "last_ts", "recent"}) {
        const auto it = doc.FindMember(section);
        if (it == doc.MemberEnd() || !it->value.IsArray()) continue;
        for (const auto& item : it->value.GetArray())
          if (auto entry = entry_from(item)) apply(*entry);
      }
    }
  }

  // One entry per line; a line cut short by a crash has no newline yet and is dropped.
  const std::string journal_text = read(kJournalFile);
  std::size_t start = 0;
  while (true) {
    const std::size_t end = journal_text.find('\n', start);
    if (end == std::string::npos) break;
    rapidjson::Document doc;
    doc.Parse(journal_text.data() + start, end - start);
    start = end + 1;
    ++journal_lines_;
    if (doc.HasParseError()) continue;
    if (auto entry = entry_from(doc)) apply(*entry);
  }
  if (start < journal_text.size()) {
    try {
      keystore::write_file_atomic(state_dir_ / kJournalFile, journal_text.substr(0, start), 0600);
    } catch (const std::system_error& e) {
      log_warning("cannot repair {}: {}", (state_dir_ / kJournalFile).string(), e.what());
    }
  }
  // The snapshot holds entries in the order they were recorded and the journal those after it,
  // so the queues come back in recording order, as they were in memory: what is evicted first
  // after a restart is what would have been evicted first without one, whatever the clock did
  // (lookups check ages themselves, see check()).
  // The count bounds hold from the start; ages are judged at the first check (by its clock).
  prune(std::numeric_limits<std::int64_t>::min() / 2);
}

}  // namespace pa
