#include "dispatch/key_pool.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cryptopp/misc.h>
#include <cryptopp/osrng.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "base/log.hpp"
#include "intake/envelope.hpp"

namespace pa {
namespace {

// Thrown by CancellableRng to end a generation when the pool stops.
struct Cancelled {};

// The system's random generator, which throws Cancelled once `stop` is set: Crypto++ draws random
// bytes for each prime candidate, so a stopped pool does not wait for a whole RSA-4096 generation
// (tens of seconds on a Pi Zero).
class CancellableRng : public CryptoPP::RandomNumberGenerator {
 public:
  explicit CancellableRng(const std::atomic<bool>& stop) : stop_(stop) {}
  void GenerateBlock(CryptoPP::byte* output, std::size_t size) override {
    if (stop_) throw Cancelled{};
    inner_.GenerateBlock(output, size);
  }

 private:
  const std::atomic<bool>& stop_;
  CryptoPP::AutoSeededRandomPool inner_;
};

std::size_t page_size() {
  const long size = ::sysconf(_SC_PAGESIZE);
  return size > 0 ? static_cast<std::size_t>(size) : 4096;
}

}  // namespace

std::optional<LockedBytes> LockedBytes::copy_of(std::string_view data) {
  const std::size_t page = page_size();
  const std::size_t mapped = std::max<std::size_t>(1, (data.size() + page - 1) / page) * page;
  void* memory =
      ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return std::nullopt;
  // Best effort: the process is not dumpable anyway (SPEC section 8), and MADV_WIPEONFORK needs
  // Linux 4.14.
  ::madvise(memory, mapped, MADV_DONTDUMP);
  ::madvise(memory, mapped, MADV_WIPEONFORK);
  // The system call itself: AddressSanitizer replaces mlock() with a no-op that reports success,
  // and a pool believed locked must be locked.
  if (::syscall(SYS_mlock, memory, mapped) != 0) {
    const int error = errno;
    ::munmap(memory, mapped);
    errno = error;
    return std::nullopt;
  }
  auto* bytes = static_cast<unsigned char*>(memory);
  std::memcpy(bytes, data.data(), data.size());
  return LockedBytes(bytes, mapped, data.size());
}

LockedBytes::LockedBytes(LockedBytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      mapped_(std::exchange(other.mapped_, 0)),
      size_(std::exchange(other.size_, 0)) {}

LockedBytes& LockedBytes::operator=(LockedBytes&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    mapped_ = std::exchange(other.mapped_, 0);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

LockedBytes::~LockedBytes() {
  release();
}

std::string_view LockedBytes::view() const noexcept {
  return {reinterpret_cast<const char*>(data_), size_};
}

void LockedBytes::wipe() noexcept {
  if (data_) CryptoPP::SecureWipeBuffer(data_, mapped_);
}

void LockedBytes::release() noexcept {
  if (!data_) return;
  wipe();
  ::munlock(data_, mapped_);
  ::munmap(data_, mapped_);
  data_ = nullptr;
  mapped_ = size_ = 0;
}

KeyPool::KeyPool(KeyPoolOptions options) : options_(std::move(options)), target_(options_.target) {
  if (target_ > 0) thread_ = std::thread([this] { run(); });
}

KeyPool::~KeyPool() {
  stop();
  std::lock_guard lock(mutex_);
  for (Pooled& pooled : held_) drop(pooled);
  held_.clear();
}

void KeyPool::cancel() noexcept {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
}

void KeyPool::stop() {
  cancel();
  if (thread_.joinable()) thread_.join();
}

void KeyPool::drop(Pooled& pooled) {
  pooled.private_pem.wipe();
  if (options_.after_wipe)
    options_.after_wipe(pooled.private_pem.mapped(), pooled.private_pem.capacity());
}

std::optional<keystore::KeyPair> KeyPool::take(keystore::KeyType type) {
  if (type != options_.type || options_.target == 0) return std::nullopt;
  std::optional<keystore::KeyPair> pair;
  {
    std::lock_guard lock(mutex_);
    if (held_.empty()) {
      ++misses_;
      return std::nullopt;
    }
    Pooled pooled = std::move(held_.front());
    held_.pop_front();
    ++hits_;
    pair.emplace();
    pair->type = type;
    const std::string_view secret = pooled.private_pem.view();
    pair->private_pem.reserve(secret.size());
    pair->private_pem.assign(secret.data(), secret.size());
    pair->public_pem = std::move(pooled.public_pem);
    drop(pooled);
  }
  changed_.notify_all();  // a refill
  return pair;
}

KeyPoolState KeyPool::state() const {
  std::lock_guard lock(mutex_);
  return KeyPoolState{options_.type, target_, held_.size(), hits_, misses_, generated_};
}

pid_t KeyPool::thread_id() const {
  std::lock_guard lock(mutex_);
  return thread_id_;
}

bool KeyPool::wait_full(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return held_.size() >= target_; });
}

void KeyPool::run() {
  ::pthread_setname_np(::pthread_self(), "pa-keypool");
  {
    std::lock_guard lock(mutex_);
    thread_id_ = ::gettid();
  }
  // On Linux, pid 0 is the calling thread: only this thread runs at idle priority.
  const sched_param idle{};
  if (::sched_setscheduler(0, SCHED_IDLE, &idle) != 0)
    log_warning(
        "key pool: cannot run at idle CPU priority (SCHED_IDLE: {}); it generates at normal "
        "priority",
        std::strerror(errno));
  const std::string type_name(keystore::to_string(options_.type));
  CancellableRng rng(stopping_);
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || held_.size() < target_; });
      if (stopping_) return;
    }
    keystore::KeyPair pair;
    const auto started = std::chrono::steady_clock::now();
    try {
      pair = keystore::generate_key_pair(options_.type, rng);
    } catch (const Cancelled&) {
      return;
    } catch (const std::exception& error) {
      log_error("key pool: cannot generate a {} key: {}; trying again in a minute", type_name,
                error.what());
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::minutes(1), [&] { return bool(stopping_); });
      continue;
    }
    if (options_.on_generated)
      options_.on_generated(options_.type, std::chrono::steady_clock::now() - started);
    std::optional<LockedBytes> locked = LockedBytes::copy_of(pair.private_pem);
    const int error = errno;
    keystore::Secret::wipe(pair.private_pem);
    std::lock_guard lock(mutex_);
    if (!locked) {
      // Held no more than what could be locked (see the header).
      target_ = held_.size();
      if (target_ == 0)
        log_warning(
            "key pool off: cannot lock memory for a private key ({}); keys are generated per "
            "request. Raise the memory lock limit (LimitMEMLOCK= in the unit, ulimit -l)",
            std::strerror(error));
      else
        log_warning(
            "key pool: cannot lock memory for more than {} private key(s) ({}); the pool holds "
            "that many. Raise the memory lock limit (LimitMEMLOCK= in the unit, ulimit -l)",
            target_, std::strerror(error));
      changed_.notify_all();
      continue;
    }
    held_.push_back(Pooled{std::move(*locked), std::move(pair.public_pem)});
    ++generated_;
    changed_.notify_all();
  }
}

}  // namespace pa
