#include "replay.hpp"

#include <cryptopp/hex.h>
#include <cryptopp/sha.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <vector>

#include "log.hpp"

namespace pa {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSnapshotFile = "replay.json";
constexpr const char* kJournalFile = "replay.journal";

std::string content_digest(const Request& request) {
  std::string digest;
  CryptoPP::SHA256 hash;
  for (const std::string* part : {&request.device_id, &request.action, &request.json}) {
    hash.Update(reinterpret_cast<const CryptoPP::byte*>(part->data()), part->size());
    hash.Update(reinterpret_cast<const CryptoPP::byte*>("\0"), 1);
  }
  CryptoPP::byte sum[CryptoPP::SHA256::DIGESTSIZE];
  hash.Final(sum);
  CryptoPP::ArraySource(sum, sizeof sum, true,
                        new CryptoPP::HexEncoder(new CryptoPP::StringSink(digest), false));
  return digest;
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

bool is_int(const rapidjson::Value& value) {
  return value.IsInt64();
}

}  // namespace

ReplayGuard::ReplayGuard(fs::path state_dir, std::int64_t max_skew, ReplayLimits limits)
    : state_dir_(std::move(state_dir)), max_skew_(max_skew), limits_(limits) {
  if (state_dir_.empty()) return;
  keystore::create_private_dirs(state_dir_, 0700);
  load();
}

std::size_t ReplayGuard::remembered_ids() const {
  std::lock_guard lock(mutex_);
  return ids_.size();
}

std::optional<ReplayRefusal> ReplayGuard::admit(const Request& request, std::int64_t now) {
  std::vector<std::string> ids;
  if (request.request_id && !request.request_id->empty()) ids.push_back(*request.request_id);
  if (request.nonce && !request.nonce->empty() && request.nonce != request.request_id)
    ids.push_back(*request.nonce);
  const bool destructive = request.action == kActionUpdate || request.action == kActionDelete;

  std::lock_guard lock(mutex_);
  prune(now);
  if (request.ts && (*request.ts < now - max_skew_ || *request.ts > now + max_skew_))
    return ReplayRefusal{
        "timestamp_outside_window",
        fmt::format("ts {} is {} s {} the agent's clock; PROVISION_MAX_SKEW allows {} s",
                    *request.ts, *request.ts < now ? now - *request.ts : *request.ts - now,
                    *request.ts < now ? "behind" : "ahead of", max_skew_)};
  for (const std::string& id : ids)
    if (ids_.count(id))
      return ReplayRefusal{"duplicate_id",
                           fmt::format("{} \"{}\" was already accepted",
                                       id == request.request_id ? "request_id" : "nonce", id)};
  if (ids.empty() && request.ts) {
    auto last = last_ts_.find(request.device_id);
    if (last != last_ts_.end() && *request.ts <= last->second)
      return ReplayRefusal{
          "timestamp_not_newer",
          fmt::format("ts {} is not newer than {}, the last accepted for this device", *request.ts,
                      last->second)};
  }
  std::string digest;
  if (ids.empty() && !request.ts && destructive) {
    digest = content_digest(request);
    if (digests_.count(digest))
      return ReplayRefusal{
          "duplicate_message",
          fmt::format("the same {} was accepted less than {} s ago (add a request_id or ts to "
                      "repeat it on purpose)",
                      request.action, limits_.duplicate_seconds)};
  }

  Record record{now, std::move(ids), request.device_id, request.ts, std::move(digest)};
  if (record.ids.empty() && !record.ts && record.digest.empty()) return std::nullopt;
  apply(record);
  persist(record);
  return std::nullopt;
}

void ReplayGuard::apply(const Record& record) {
  // The order queues may hold stale entries for a key re-accepted later; pruning and the snapshot
  // skip an entry whose time is not the map's.
  auto remember = [&](auto& map, auto& order, const std::string& key) {
    auto [it, inserted] = map.try_emplace(key, record.time);
    if (!inserted && it->second == record.time) return;
    it->second = record.time;
    order.emplace_back(record.time, key);
  };
  for (const std::string& id : record.ids) remember(ids_, id_order_, id);
  if (!record.digest.empty()) remember(digests_, digest_order_, record.digest);
  if (record.ts) {
    auto [it, inserted] = last_ts_.try_emplace(record.device, *record.ts);
    if (!inserted) it->second = std::max(it->second, *record.ts);
  }
}

void ReplayGuard::prune(std::int64_t now) {
  // A copy of a request with a ts passes the window until ts + skew, and ts may be up to skew
  // ahead of the time it was accepted: ids are kept for twice the skew.
  const std::int64_t id_cutoff = now - 2 * max_skew_;
  auto drop = [](auto& map, auto& order, std::int64_t cutoff, std::size_t bound) {
    while (!order.empty() && (order.front().first < cutoff || order.size() > bound)) {
      auto it = map.find(order.front().second);
      if (it != map.end() && it->second == order.front().first) map.erase(it);
      order.pop_front();
    }
  };
  drop(ids_, id_order_, id_cutoff, limits_.max_ids);
  drop(digests_, digest_order_, now - limits_.duplicate_seconds, limits_.max_digests);
  // A last ts older than the window can no longer refuse anything: every ts that passes the
  // window is newer.
  if (last_ts_.size() > limits_.max_devices) {
    for (auto it = last_ts_.begin(); it != last_ts_.end();)
      it = it->second < now - max_skew_ ? last_ts_.erase(it) : std::next(it);
    while (last_ts_.size() > limits_.max_devices)
      last_ts_.erase(std::min_element(last_ts_.begin(), last_ts_.end(),
                                      [](auto& a, auto& b) { return a.second < b.second; }));
  }
}

namespace {

std::string record_json(std::int64_t time, const std::vector<std::string>& ids,
                        const std::string& device, std::optional<std::int64_t> ts,
                        const std::string& digest) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("t");
  w.Int64(time);
  if (!ids.empty()) {
    w.Key("ids");
    w.StartArray();
    for (const std::string& id : ids)
      w.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
    w.EndArray();
  }
  if (ts) {
    w.Key("device");
    w.String(device.data(), static_cast<rapidjson::SizeType>(device.size()));
    w.Key("ts");
    w.Int64(*ts);
  }
  if (!digest.empty()) {
    w.Key("digest");
    w.String(digest.data(), static_cast<rapidjson::SizeType>(digest.size()));
  }
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace

void ReplayGuard::persist(const Record& record) {
  if (state_dir_.empty()) return;
  try {
    if (journal_lines_ >= limits_.journal_max) {
      // Fold the journal into the snapshot; a crash before the truncation only replays lines
      // that the snapshot already holds.
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
    write_all(journal_.get(),
              record_json(record.time, record.ids, record.device, record.ts, record.digest) + "\n");
    if (::fdatasync(journal_.get()) != 0)
      throw std::system_error(errno, std::generic_category(), "fdatasync");
    ++journal_lines_;
    write_failed_ = false;
  } catch (const std::system_error& e) {
    // The guard still works from memory; only a restart would forget.
    if (!write_failed_)
      log_error("cannot save the replay memory in {}: {}", state_dir_.string(), e.what());
    write_failed_ = true;
    journal_.reset();
  }
}

std::string ReplayGuard::snapshot() const {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  auto pairs = [&](const char* name, const auto& order, const auto& map) {
    w.Key(name);
    w.StartArray();
    for (const auto& [time, key] : order) {
      auto it = map.find(key);
      if (it == map.end() || it->second != time) continue;
      w.StartArray();
      w.String(key.data(), static_cast<rapidjson::SizeType>(key.size()));
      w.Int64(time);
      w.EndArray();
    }
    w.EndArray();
  };
  w.StartObject();
  w.Key("version");
  w.Int(1);
  pairs("ids", id_order_, ids_);
  pairs("recent", digest_order_, digests_);
  w.Key("last_ts");
  w.StartArray();
  for (const auto& [device, ts] : last_ts_) {
    w.StartArray();
    w.String(device.data(), static_cast<rapidjson::SizeType>(device.size()));
    w.Int64(ts);
    w.EndArray();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize()) + "\n";
}

void ReplayGuard::load() {
  auto read = [&](const char* name) -> std::string {
    const fs::path path = state_dir_ / name;
    std::error_code ec;
    if (!fs::exists(path, ec)) return {};
    try {
      return keystore::read_file(path);
    } catch (const std::system_error& e) {
      log_warning("cannot read the replay memory {}: {}", path.string(), e.what());
      return {};
    }
  };

  const std::string snapshot_text = read(kSnapshotFile);
  if (!snapshot_text.empty()) {
    rapidjson::Document doc;
    doc.Parse(snapshot_text.data(), snapshot_text.size());
    if (doc.HasParseError() || !doc.IsObject()) {
      log_warning("ignoring {}: not the JSON the agent writes",
                  (state_dir_ / kSnapshotFile).string());
    } else {
      auto entries = [&](const char* name, auto&& add) {
        auto it = doc.FindMember(name);
        if (it == doc.MemberEnd() || !it->value.IsArray()) return;
        for (const auto& entry : it->value.GetArray())
          if (entry.IsArray() && entry.Size() == 2 && entry[0].IsString() && is_int(entry[1]))
            add(std::string(entry[0].GetString(), entry[0].GetStringLength()), entry[1].GetInt64());
      };
      entries("ids", [&](std::string id, std::int64_t time) {
        apply(Record{time, {std::move(id)}, {}, std::nullopt, {}});
      });
      entries("recent", [&](std::string digest, std::int64_t time) {
        apply(Record{time, {}, {}, std::nullopt, std::move(digest)});
      });
      entries("last_ts", [&](std::string device, std::int64_t ts) {
        apply(Record{0, {}, std::move(device), ts, {}});
      });
    }
  }

  // One record per line; a line cut short by a crash has no newline yet and is skipped.
  const std::string journal_text = read(kJournalFile);
  std::size_t start = 0;
  while (true) {
    const std::size_t end = journal_text.find('\n', start);
    if (end == std::string::npos) break;
    rapidjson::Document doc;
    doc.Parse(journal_text.data() + start, end - start);
    start = end + 1;
    ++journal_lines_;
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("t") || !is_int(doc["t"]))
      continue;
    Record record;
    record.time = doc["t"].GetInt64();
    if (doc.HasMember("ids") && doc["ids"].IsArray())
      for (const auto& id : doc["ids"].GetArray())
        if (id.IsString()) record.ids.emplace_back(id.GetString(), id.GetStringLength());
    if (doc.HasMember("device") && doc["device"].IsString() && doc.HasMember("ts") &&
        is_int(doc["ts"])) {
      record.device.assign(doc["device"].GetString(), doc["device"].GetStringLength());
      record.ts = doc["ts"].GetInt64();
    }
    if (doc.HasMember("digest") && doc["digest"].IsString())
      record.digest.assign(doc["digest"].GetString(), doc["digest"].GetStringLength());
    apply(record);
  }
  if (start < journal_text.size()) {
    // Drop the torn tail so the next append starts on a fresh line.
    try {
      keystore::write_file_atomic(state_dir_ / kJournalFile, journal_text.substr(0, start), 0600);
    } catch (const std::system_error& e) {
      log_warning("cannot repair {}: {}", (state_dir_ / kJournalFile).string(), e.what());
    }
  }
  // Ids loaded from the snapshot and the journal are in time order within each file, and the
  // journal is newer than the snapshot; sort anyway so pruning stays correct after clock steps.
  std::stable_sort(id_order_.begin(), id_order_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::stable_sort(digest_order_.begin(), digest_order_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
}

}  // namespace pa
