// The key pool (SPEC 3.4, issue 13): what a request takes from it, what it refuses, where its
// thread runs, and that every key it held is wiped when taken or when the pool goes.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "dispatch/key_pool.hpp"
#include "keystore/key_pair.hpp"

namespace pa {
namespace {

using keystore::KeyType;
using namespace std::chrono_literals;

KeyPoolOptions options(KeyType type, std::size_t target) {
  KeyPoolOptions o;
  o.type = type;
  o.target = target;
  return o;
}

TEST(KeyPool, TakesDistinctMatchingPairsOfItsTypeAndRefills) {
  KeyPool pool(options(KeyType::ec_p256, 3));
  ASSERT_TRUE(pool.wait_full(30s));
  std::set<std::string> privates;
  for (int i = 0; i < 3; ++i) {
    std::optional<keystore::KeyPair> pair = pool.take(KeyType::ec_p256);
    ASSERT_TRUE(pair);
    EXPECT_EQ(pair->type, KeyType::ec_p256);
    // The pair is whole: its public half is the one its private key derives.
    EXPECT_EQ(keystore::key_pair_from_private_pem(pair->private_pem).public_pem, pair->public_pem);
    EXPECT_EQ(pair->private_pem.capacity(), pair->private_pem.size());  // one exact buffer
    privates.insert(pair->private_pem);
  }
  EXPECT_EQ(privates.size(), 3u) << "a pooled pair was handed out twice";
  // Taken pairs are made again.
  ASSERT_TRUE(pool.wait_full(30s));
  const KeyPoolState state = pool.state();
  EXPECT_EQ(state.held, 3u);
  EXPECT_EQ(state.hits, 3u);
  EXPECT_EQ(state.misses, 0u);
  EXPECT_GE(state.generated, 6u);
  std::optional<keystore::KeyPair> again = pool.take(KeyType::ec_p256);
  ASSERT_TRUE(again);
  EXPECT_EQ(privates.count(again->private_pem), 0u);
}

TEST(KeyPool, AnotherTypeIsNotServedNorCounted) {
  KeyPool pool(options(KeyType::ec_p256, 1));
  ASSERT_TRUE(pool.wait_full(30s));
  EXPECT_FALSE(pool.take(KeyType::ed25519));
  EXPECT_FALSE(pool.take(KeyType::rsa2048));
  const KeyPoolState state = pool.state();
  EXPECT_EQ(state.hits, 0u);
  EXPECT_EQ(state.misses, 0u);
  EXPECT_EQ(state.held, 1u);
}

TEST(KeyPool, AnEmptyPoolCountsAMissAndAStoppedOneStaysEmpty) {
  KeyPool pool(options(KeyType::ed25519, 1));
  ASSERT_TRUE(pool.wait_full(30s));
  pool.stop();  // nothing is generated from now on
  EXPECT_TRUE(pool.take(KeyType::ed25519));
  EXPECT_FALSE(pool.take(KeyType::ed25519));
  const KeyPoolState state = pool.state();
  EXPECT_EQ(state.hits, 1u);
  EXPECT_EQ(state.misses, 1u);
  EXPECT_EQ(state.held, 0u);
}

TEST(KeyPool, OffHasNoThreadAndServesNothing) {
  KeyPool pool(options(KeyType::ec_p256, 0));
  EXPECT_EQ(pool.thread_id(), 0);
  EXPECT_FALSE(pool.take(KeyType::ec_p256));
  EXPECT_EQ(pool.state().generated, 0u);
  EXPECT_EQ(pool.state().target, 0u);
}

TEST(KeyPool, GeneratesOnAThreadAtIdlePriority) {
  KeyPool pool(options(KeyType::ed25519, 1));
  ASSERT_TRUE(pool.wait_full(30s));
  const pid_t thread = pool.thread_id();
  ASSERT_GT(thread, 0);
  EXPECT_NE(thread, ::getpid());
  // On Linux a thread id is a scheduling entity of its own.
  EXPECT_EQ(::sched_getscheduler(thread), SCHED_IDLE);
  EXPECT_NE(::sched_getscheduler(0), SCHED_IDLE) << "the caller's own thread must be unchanged";
}

// Every locked buffer the pool held: wiped (all zero) when its pair was taken and, for those
// still held, when the pool was destroyed.
TEST(KeyPool, WipesEveryHeldKeyWhenTakenAndAtDestruction) {
  struct Wiped {
    std::size_t buffers = 0;
    std::size_t nonzero_bytes = 0;
  } wiped;
  KeyPoolOptions o = options(KeyType::ec_p256, 3);
  o.after_wipe = [&](const unsigned char* bytes, std::size_t size) {
    ++wiped.buffers;
    wiped.nonzero_bytes += static_cast<std::size_t>(
        std::count_if(bytes, bytes + size, [](unsigned char b) { return b != 0; }));
  };
  {
    KeyPool pool(o);
    ASSERT_TRUE(pool.wait_full(30s));
    pool.stop();
    ASSERT_TRUE(pool.take(KeyType::ec_p256));
    EXPECT_EQ(wiped.buffers, 1u);
    EXPECT_EQ(pool.state().held, 2u);
  }
  EXPECT_EQ(wiped.buffers, 3u);
  EXPECT_EQ(wiped.nonzero_bytes, 0u);
}

TEST(LockedBytes, HoldsACopyInLockedPagesAndWipesIt) {
  const std::string secret = "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n";
  std::optional<LockedBytes> bytes = LockedBytes::copy_of(secret);
  ASSERT_TRUE(bytes) << std::strerror(errno);
  EXPECT_EQ(bytes->view(), secret);
  EXPECT_EQ(bytes->capacity() % static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)), 0u);
  bytes->wipe();
  EXPECT_TRUE(std::all_of(bytes->mapped(), bytes->mapped() + bytes->capacity(),
                          [](unsigned char b) { return b == 0; }));
  LockedBytes moved = std::move(*bytes);
  EXPECT_EQ(bytes->mapped(), nullptr);
  EXPECT_NE(moved.mapped(), nullptr);
}

// mlock refused (RLIMIT_MEMLOCK 0, no CAP_IPC_LOCK): not fatal, the pool turns itself off, and
// requests generate as without it. In a child process: the limit and the user change are its own.
TEST(KeyPool, TurnsItselfOffWhenMemoryCannotBeLocked) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const rlimit none{0, 0};
    if (::setrlimit(RLIMIT_MEMLOCK, &none) != 0) ::_exit(10);
    // root locks memory whatever the limit (CAP_IPC_LOCK): become nobody first.
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(11);
    if (LockedBytes::copy_of("x")) ::_exit(12);  // the limit holds
    KeyPool pool(options(KeyType::ed25519, 2));
    if (!pool.wait_full(30s)) ::_exit(13);
    const KeyPoolState state = pool.state();
    if (state.target != 0 || state.held != 0) ::_exit(14);
    if (pool.take(KeyType::ed25519)) ::_exit(15);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setrlimit, 11: setuid, 12: mlock was allowed, "
                                       "13: no answer, 14: the pool kept keys, 15: take served";
}

}  // namespace
}  // namespace pa
