#include "key_index.hpp"

#include <algorithm>
#include <utility>

namespace pa::keystore {

void insert_in_order(std::vector<IndexedPair>& pairs, IndexedPair pair) {
  // Legacy (no user) sorts after every user.
  auto before = [](const IndexedPair& a, const std::optional<std::string>& user) {
    if (!a.user) return false;
    if (!user) return true;
    return *a.user < *user;
  };
  auto at = std::find_if(pairs.begin(), pairs.end(),
                         [&](const IndexedPair& p) { return !before(p, pair.user); });
  if (at != pairs.end() && at->user == pair.user) {
    at->type = pair.type;
    return;
  }
  pairs.insert(at, std::move(pair));
}

void KeyIndex::count_locked(const std::optional<KeyType>& type, int change) {
  const std::string name = type ? std::string(to_string(*type)) : std::string("unknown");
  std::size_t& count = by_type_[name];
  count = change > 0 ? count + 1 : (count > 0 ? count - 1 : 0);
  if (count == 0) by_type_.erase(name);
}

void KeyIndex::apply_locked(const Change& change) {
  auto it = map_.find(change.device);
  auto same_folder = [&](const IndexedPair& p) { return p.user == change.user; };
  if (change.added) {
    if (it == map_.end()) it = map_.emplace(change.device, std::vector<IndexedPair>{}).first;
    const auto old = std::find_if(it->second.begin(), it->second.end(), same_folder);
    if (old != it->second.end()) {
      count_locked(old->type, -1);
      --pairs_;
    }
    insert_in_order(it->second, IndexedPair{change.user, change.type});
    count_locked(change.type, +1);
    ++pairs_;
    return;
  }
  if (it == map_.end()) return;
  auto& pairs = it->second;
  const auto gone = std::remove_if(pairs.begin(), pairs.end(), same_folder);
  for (auto p = gone; p != pairs.end(); ++p) {
    count_locked(p->type, -1);
    --pairs_;
  }
  pairs.erase(gone, pairs.end());
  if (pairs.empty()) map_.erase(it);
}

void KeyIndex::begin_rebuild() {
  std::unique_lock lock(mutex_);
  rebuilding_ = true;
  journal_.clear();
}

void KeyIndex::finish_rebuild(Map scanned) {
  std::unique_lock lock(mutex_);
  map_ = std::move(scanned);
  pairs_ = 0;
  by_type_.clear();
  for (const auto& [device, pairs] : map_) {
    pairs_ += pairs.size();
    for (const IndexedPair& pair : pairs) count_locked(pair.type, +1);
  }
  // What happened while the scan ran is on disk now; the scan may have missed it.
  for (const Change& change : journal_) apply_locked(change);
  journal_.clear();
  rebuilding_ = false;
}

void KeyIndex::add(const std::optional<std::string>& user, const std::string& device,
                   KeyType type) {
  std::unique_lock lock(mutex_);
  Change change{true, user, device, type};
  apply_locked(change);
  if (rebuilding_) journal_.push_back(std::move(change));
}

void KeyIndex::remove(const std::optional<std::string>& user, const std::string& device) {
  std::unique_lock lock(mutex_);
  Change change{false, user, device, KeyType::rsa2048};
  apply_locked(change);
  if (rebuilding_) journal_.push_back(std::move(change));
}

std::vector<IndexedPair> KeyIndex::find(const std::string& device) const {
  std::shared_lock lock(mutex_);
  const auto it = map_.find(device);
  if (it == map_.end()) return {};
  return it->second;
}

std::size_t KeyIndex::pairs() const {
  std::shared_lock lock(mutex_);
  return pairs_;
}

std::map<std::string, std::size_t> KeyIndex::pairs_by_type() const {
  std::shared_lock lock(mutex_);
  return by_type_;
}

KeyIndex::Map KeyIndex::snapshot() const {
  std::shared_lock lock(mutex_);
  return map_;
}

}  // namespace pa::keystore
