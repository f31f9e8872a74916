#pragma once
// The key store's index of device -> folders holding its private key (issue 13): the decrypt path
// and the E2EE policy look a device up here instead of listing every user folder, so a request
// costs the same with 10 devices in the store as with 10,000.
//
// The index is memory only. KeyStore builds it with one scan when it opens the store, updates it
// on every store() and remove(), and never trusts it blindly: a lookup checks each folder it names
// (a few openat/fstatat calls) and rescans when one is gone or the legacy folder disagrees (a
// folder removed or restored by hand). A crash loses nothing: the next start scans again.
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "key_pair.hpp"

namespace pa::keystore {

// One pair of a device: its user folder (none: the legacy folder <root>/<device>) and its type
// (none when the public key could not be read while scanning).
struct IndexedPair {
  std::optional<std::string> user;
  std::optional<KeyType> type;
  bool operator==(const IndexedPair& other) const {
    return user == other.user && type == other.type;
  }
};

class KeyIndex {
 public:
  // device -> its pairs in SPEC section 4's order: users by name, then the legacy folder.
  using Map = std::unordered_map<std::string, std::vector<IndexedPair>>;

  // A rebuild: begin_rebuild(), scan without any lock, finish_rebuild(scan). Changes recorded
  // between the two are replayed over the scan, so a write that the scan missed (or saw half) is
  // not lost. One rebuild at a time (the caller serialises them).
  void begin_rebuild();
  void finish_rebuild(Map scanned);

  // After a pair was written (the type it has now) or its private key removed.
  void add(const std::optional<std::string>& user, const std::string& device, KeyType type);
  void remove(const std::optional<std::string>& user, const std::string& device);

  // The device's pairs, in SPEC section 4's order.
  std::vector<IndexedPair> find(const std::string& device) const;
  std::size_t pairs() const;
  // Pairs by type name ("rsa-2048", ...; "unknown" for a public key that could not be read).
  std::map<std::string, std::size_t> pairs_by_type() const;
  // Everything, for checks (`keys verify`).
  Map snapshot() const;

 private:
  struct Change {
    bool added;
    std::optional<std::string> user;
    std::string device;
    KeyType type;
  };
  void apply_locked(const Change& change);

  void count_locked(const std::optional<KeyType>& type, int change);

  mutable std::shared_mutex mutex_;
  Map map_;
  std::size_t pairs_ = 0;
  std::map<std::string, std::size_t> by_type_;  // kept with map_: metrics read it often
  bool rebuilding_ = false;
  std::vector<Change> journal_;  // while rebuilding_
};

// Puts `pair` into `pairs` at its place in SPEC section 4's order (users by name, legacy last),
// replacing the pair of the same folder.
void insert_in_order(std::vector<IndexedPair>& pairs, IndexedPair pair);

}  // namespace pa::keystore
