#include "intake/spool.hpp"

#include <cryptopp/crc.h>
#include <cryptopp/osrng.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>

#include "base/log.hpp"

namespace pa {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSpoolFile = "intake.spool";
constexpr std::size_t kFrameHeader = 8;
// A frame is a request of at most PROVISION_MAX_PAYLOAD (16 MiB at most) plus its topics.
constexpr std::uint32_t kMaxBody = 17u << 20;
// Compaction thresholds: an idle spool is reset once it passes the first; a busy one is
// rewritten with only its pending frames once it passes the second and is mostly answered.
constexpr std::uint64_t kResetWhenIdle = 1u << 20;
constexpr std::uint64_t kRewriteWhenBusy = 16u << 20;

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

class Writer {
 public:
  explicit Writer(char type) { body_.push_back(type); }
  Writer& u8(std::uint8_t value) {
    body_.push_back(static_cast<char>(value));
    return *this;
  }
  Writer& u32(std::uint32_t value) {
    for (int i = 0; i < 4; ++i) body_.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
    return *this;
  }
  Writer& u64(std::uint64_t value) {
    for (int i = 0; i < 8; ++i) body_.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
    return *this;
  }
  Writer& i64(std::int64_t value) { return u64(static_cast<std::uint64_t>(value)); }
  Writer& str(std::string_view text) {
    u32(static_cast<std::uint32_t>(text.size()));
    body_.append(text);
    return *this;
  }
  // The whole frame: length, CRC-32C, body.
  std::string frame() const {
    std::uint32_t crc = 0;
    CryptoPP::CRC32C().CalculateDigest(reinterpret_cast<CryptoPP::byte*>(&crc),
                                       reinterpret_cast<const CryptoPP::byte*>(body_.data()),
                                       body_.size());
    std::string out;
    out.reserve(kFrameHeader + body_.size());
    const auto length = static_cast<std::uint32_t>(body_.size());
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
    out.append(reinterpret_cast<const char*>(&crc), 4);  // the digest's own byte order
    out.append(body_);
    return out;
  }

 private:
  std::string body_;
};

// Reads a body; every accessor fails (ok() false) rather than read past the end.
class Reader {
 public:
  explicit Reader(std::string_view body) : rest_(body) {}
  bool ok() const { return ok_; }
  bool at_end() const { return rest_.empty(); }
  std::uint8_t u8() {
    if (!take(1)) return 0;
    return static_cast<std::uint8_t>(taken_[0]);
  }
  std::uint32_t u32() {
    if (!take(4)) return 0;
    std::uint32_t value = 0;
    for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<std::uint8_t>(taken_[i]);
    return value;
  }
  std::uint64_t u64() {
    if (!take(8)) return 0;
    std::uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<std::uint8_t>(taken_[i]);
    return value;
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  std::string str() {
    const std::uint32_t length = u32();
    if (!ok_ || !take(length)) return {};
    return std::string(taken_);
  }

 private:
  bool take(std::size_t count) {
    if (!ok_ || rest_.size() < count) {
      ok_ = false;
      return false;
    }
    taken_ = rest_.substr(0, count);
    rest_.remove_prefix(count);
    return true;
  }
  std::string_view rest_;
  std::string_view taken_;
  bool ok_ = true;
};

std::uint32_t crc32c(std::string_view data) {
  std::uint32_t crc = 0;
  CryptoPP::CRC32C().CalculateDigest(reinterpret_cast<CryptoPP::byte*>(&crc),
                                     reinterpret_cast<const CryptoPP::byte*>(data.data()),
                                     data.size());
  return crc;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint64_t random_epoch() {
  CryptoPP::AutoSeededRandomPool rng;
  std::uint64_t epoch = 0;
  while (epoch == 0) rng.GenerateBlock(reinterpret_cast<CryptoPP::byte*>(&epoch), sizeof epoch);
  return epoch;
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_errno("write");
    }
    data.remove_prefix(static_cast<std::size_t>(written));
  }
}

std::string read_all(int fd) {
  std::string content;
  char buffer[65536];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("read");
    }
    if (got == 0) break;
    content.append(buffer, static_cast<std::size_t>(got));
  }
  return content;
}

std::string read_range(int fd, std::uint64_t offset, std::uint32_t length) {
  std::string data(length, '\0');
  std::size_t done = 0;
  while (done < length) {
    const ssize_t got =
        ::pread(fd, data.data() + done, length - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("pread");
    }
    if (got == 0) throw std::system_error(EIO, std::generic_category(), "spool file shrank");
    done += static_cast<std::size_t>(got);
  }
  return data;
}

}  // namespace

std::string encode_spool_header(std::uint64_t epoch, std::uint64_t next_seq) {
  return Writer('S').u64(epoch).u64(next_seq).frame();
}

std::string encode_spool_request(const InboundMessage& message, std::int64_t arrived_ms) {
  return Writer('R')
      .u64(message.seq)
      .i64(arrived_ms)
      .i64(message.expires_at_ms)
      .u8(static_cast<std::uint8_t>(message.kind))
      .str(message.topic)
      .str(message.device_id)
      .str(message.payload)
      .u8(message.response_topic ? 1 : 0)
      .str(message.response_topic.value_or(""))
      .str(message.correlation_data)
      .frame();
}

std::string encode_spool_intent(std::uint64_t seq, const ChangeIntent& intent) {
  return Writer('B')
      .u64(seq)
      .u8(intent.fingerprint_before ? 1 : 0)
      .str(intent.fingerprint_before.value_or(""))
      .frame();
}

std::string encode_spool_done(std::uint64_t seq) {
  return Writer('D').u64(seq).frame();
}

SpoolImage read_spool_image(std::string_view bytes) {
  SpoolImage image;
  std::vector<SpooledRequest> requests;
  std::unordered_map<std::uint64_t, std::size_t> index;  // seq -> position in `requests`
  std::vector<bool> done;
  std::uint64_t last_request_seq = 0;
  std::size_t offset = 0;
  while (bytes.size() - offset >= kFrameHeader) {
    Reader header(bytes.substr(offset, kFrameHeader));
    const std::uint32_t length = header.u32();
    std::uint32_t stored_crc = 0;
    std::memcpy(&stored_crc, bytes.data() + offset + 4, 4);
    if (length == 0 || length > kMaxBody || bytes.size() - offset - kFrameHeader < length) break;
    const std::string_view body = bytes.substr(offset + kFrameHeader, length);
    if (crc32c(body) != stored_crc) break;
    Reader reader(body);
    const char type = static_cast<char>(reader.u8());
    // Each frame is read whole and checked whole (every field, nothing left over) before it
    // counts: a frame that is cut off as damaged changes nothing. Sequence numbers at or past
    // kSpoolSeqLimit are damage too: the next one could not be written down.
    bool valid = false;
    if (type == 'S') {
      const std::uint64_t epoch = reader.u64();
      const std::uint64_t next = reader.u64();
      // A header is only valid first; its epoch is never 0.
      valid = reader.ok() && reader.at_end() && image.frames == 0 && epoch != 0 &&
              next <= kSpoolSeqLimit;
      if (valid) {
        image.epoch = epoch;
        image.next_seq = std::max<std::uint64_t>(next, 1);
      }
    } else if (type == 'R') {
      SpooledRequest request;
      InboundMessage& message = request.message;
      message.seq = reader.u64();
      reader.i64();  // arrival time: for people reading the file
      message.expires_at_ms = reader.i64();
      const std::uint8_t kind = reader.u8();
      message.topic = reader.str();
      message.device_id = reader.str();
      message.payload = reader.str();
      const bool has_response_topic = reader.u8() != 0;
      std::string response_topic = reader.str();
      message.correlation_data = reader.str();
      if (has_response_topic) message.response_topic = std::move(response_topic);
      message.payload_bytes = message.payload.size();
      valid = reader.ok() && reader.at_end() && image.epoch != 0 &&
              kind <= static_cast<std::uint8_t>(TopicKind::remove) &&
              message.seq > last_request_seq && message.seq < kSpoolSeqLimit;
      if (valid) {
        message.kind = static_cast<TopicKind>(kind);
        last_request_seq = message.seq;
        image.next_seq = std::max(image.next_seq, message.seq + 1);
        index[message.seq] = requests.size();
        requests.push_back(std::move(request));
        done.push_back(false);
      }
    } else if (type == 'B') {
      const std::uint64_t seq = reader.u64();
      const bool had_key = reader.u8() != 0;
      std::string fingerprint = reader.str();
      const auto it = index.find(seq);
      valid = reader.ok() && reader.at_end() && it != index.end();
      if (valid) {
        ChangeIntent intent;
        if (had_key) intent.fingerprint_before = std::move(fingerprint);
        // The first intent counts: it describes the key as it was before any change.
        if (!requests[it->second].intent) requests[it->second].intent = std::move(intent);
      }
    } else if (type == 'D') {
      const std::uint64_t seq = reader.u64();
      const auto it = index.find(seq);
      valid = reader.ok() && reader.at_end() && it != index.end();
      if (valid) done[it->second] = true;
    }
    if (!valid) break;
    offset += kFrameHeader + length;
    ++image.frames;
  }
  image.valid_bytes = image.epoch == 0 ? 0 : offset;
  if (image.epoch == 0) {
    image.frames = 0;
    return image;
  }
  for (std::size_t i = 0; i < requests.size(); ++i)
    if (!done[i]) image.pending.push_back(std::move(requests[i]));
  return image;
}

IntakeSpool::IntakeSpool(const fs::path& state_dir, std::size_t capacity)
    : dir_(state_dir), path_(state_dir / kSpoolFile), capacity_(capacity) {
  // A crash while the file was rewritten (below, or compacted) leaves its copy: one per crash,
  // up to the spool's size each, in a crash loop.
  if (const std::size_t removed = keystore::remove_stale_temp_files(path_))
    log_info("removed {} temporary copy(ies) of {} left by an interrupted rewrite", removed,
             path_.string());
  fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd_) throw_errno(fmt::format("open {}", path_.string()));
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) throw_errno(fmt::format("stat {}", path_.string()));
  if (!S_ISREG(st.st_mode))
    throw std::system_error(EINVAL, std::generic_category(), path_.string() + " is not a file");
  const std::string bytes = read_all(fd_.get());
  SpoolImage image = read_spool_image(bytes);
  epoch_ = image.epoch != 0 ? image.epoch : random_epoch();
  next_seq_ = image.next_seq;
  if (image.valid_bytes < bytes.size() && !bytes.empty())
    log_warning(
        "intake spool {}: cut off {} damaged byte(s) after {} intact record(s) (a crash "
        "during a write)",
        path_.string(), bytes.size() - image.valid_bytes, image.frames);
  recovered_ = std::move(image.pending);
  if (!recovered_.empty())
    log_info("intake spool: {} request(s) left unanswered by the last run will be served first",
             recovered_.size());
  // Start from a file holding only what is still pending: the header, then each pending
  // request's frames. Written aside and renamed, so a crash now leaves the old file or this one.
  std::string content = encode_spool_header(epoch_, next_seq_);
  std::vector<std::pair<std::uint64_t, std::vector<Extent>>> extents;
  for (const SpooledRequest& request : recovered_) {
    std::vector<Extent> frames;
    std::string frame = encode_spool_request(request.message, now_ms());
    frames.push_back({content.size(), static_cast<std::uint32_t>(frame.size())});
    content += frame;
    if (request.intent) {
      frame = encode_spool_intent(request.message.seq, *request.intent);
      frames.push_back({content.size(), static_cast<std::uint32_t>(frame.size())});
      content += frame;
    }
    extents.emplace_back(request.message.seq, std::move(frames));
  }
  if (content != bytes) {
    keystore::write_file_atomic(path_, content, 0600);
    fd_.reset(::open(path_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
    if (!fd_) throw_errno(fmt::format("open {}", path_.string()));
  }
  size_ = content.size();
  for (auto& [seq, frames] : extents) pending_extents_[seq] = std::move(frames);
}

std::vector<SpooledRequest> IntakeSpool::take_recovered() {
  std::lock_guard lock(mutex_);
  return std::move(recovered_);
}

IntakeSpool::Extent IntakeSpool::write_locked(std::string_view frame, bool sync) {
  if (!fd_) throw std::system_error(EBADF, std::generic_category(), "spool is not open");
  const Extent extent{size_, static_cast<std::uint32_t>(frame.size())};
  std::size_t done = 0;
  while (done < frame.size()) {
    const ssize_t written = ::pwrite(fd_.get(), frame.data() + done, frame.size() - done,
                                     static_cast<off_t>(size_ + done));
    if (written < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      // Whatever part got written is beyond size_ and will be overwritten by the next frame
      // (or cut off as a torn tail after a crash).
      throw std::system_error(error, std::generic_category(), "write");
    }
    done += static_cast<std::size_t>(written);
  }
  if (sync && ::fdatasync(fd_.get()) != 0) throw_errno("fdatasync");
  size_ += frame.size();
  return extent;
}

IntakeSpool::Admission IntakeSpool::append(InboundMessage& message, std::string* error) {
  std::lock_guard lock(mutex_);
  if (pending_extents_.size() >= capacity_) return Admission::full;
  if (next_seq_ >= kSpoolSeqLimit) {
    if (error)
      *error = fmt::format(
          "the intake spool {} has used up its sequence numbers (a forged or damaged file?)",
          path_.string());
    message.seq = 0;
    return Admission::failed;
  }
  message.seq = next_seq_;
  if (unspooled_) {
    pending_extents_[message.seq] = {};
    ++next_seq_;
    return Admission::spooled;
  }
  try {
    const Extent extent = write_locked(encode_spool_request(message, now_ms()), true);
    pending_extents_[message.seq] = {extent};
    ++next_seq_;
    return Admission::spooled;
  } catch (const std::system_error& failure) {
    if (error)
      *error = fmt::format("cannot write the intake spool {}: {}", path_.string(),
                           failure.code().message());
    message.seq = 0;
    return Admission::failed;
  }
}

bool IntakeSpool::begin_change(std::uint64_t seq, const ChangeIntent& intent) {
  std::lock_guard lock(mutex_);
  const auto it = pending_extents_.find(seq);
  if (it == pending_extents_.end() || unspooled_) return true;  // not spooled (tools, bench)
  try {
    it->second.push_back(write_locked(encode_spool_intent(seq, intent), true));
    return true;
  } catch (const std::system_error& failure) {
    log_error("cannot write the intake spool {}: {}", path_.string(), failure.code().message());
    return false;
  }
}

void IntakeSpool::finish(std::uint64_t seq) {
  std::lock_guard lock(mutex_);
  if (pending_extents_.erase(seq) == 0 || unspooled_) return;
  try {
    write_locked(encode_spool_done(seq), false);
    compact_locked();
  } catch (const std::system_error& failure) {
    // The request will be served again after a restart; harmless (see the header).
    log_warning("cannot mark request {} answered in {}: {}", seq, path_.string(),
                failure.code().message());
  }
}

void IntakeSpool::compact_locked() {
  const bool idle = pending_extents_.empty() && size_ > kResetWhenIdle;
  std::uint64_t live = 0;
  for (const auto& [seq, extents] : pending_extents_)
    for (const Extent& extent : extents) live += extent.length;
  const bool bloated = size_ > kRewriteWhenBusy && live < size_ / 4;
  if (!idle && !bloated) return;
  std::string content = encode_spool_header(epoch_, next_seq_);
  std::vector<std::uint64_t> seqs;
  for (const auto& [seq, extents] : pending_extents_) seqs.push_back(seq);
  std::sort(seqs.begin(), seqs.end());
  std::unordered_map<std::uint64_t, std::vector<Extent>> moved;
  for (std::uint64_t seq : seqs) {
    for (const Extent& extent : pending_extents_[seq]) {
      const std::string frame = read_range(fd_.get(), extent.offset, extent.length);
      moved[seq].push_back({content.size(), extent.length});
      content += frame;
    }
  }
  keystore::write_file_atomic(path_, content, 0600);
  keystore::UniqueFd fresh(::open(path_.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (!fresh) throw_errno(fmt::format("open {}", path_.string()));
  fd_ = std::move(fresh);
  size_ = content.size();
  pending_extents_ = std::move(moved);
}

std::uint64_t IntakeSpool::last_seq() const {
  std::lock_guard lock(mutex_);
  return next_seq_ - 1;
}

std::size_t IntakeSpool::pending() const {
  std::lock_guard lock(mutex_);
  return pending_extents_.size();
}

std::uint64_t IntakeSpool::file_size() const {
  std::lock_guard lock(mutex_);
  return size_;
}

}  // namespace pa
