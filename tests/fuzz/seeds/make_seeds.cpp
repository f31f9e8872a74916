// pa_fuzz_seeds OUTPUT_DIR: writes the seeds that need keys or the code under test into
// OUTPUT_DIR/TARGET/: SPEC 3.1 requests sealed to the fuzz test key (EAX and GCM, every AES key
// size, signed and not) and freshly generated key pairs of every type, PKCS#8, PKCS#1 and public;
// ledger files as a RequestLedger writes them, with the requests that made them; and spool files
// made with the encode_* functions, whole, torn and with broken checksums. Generated, not
// committed, so they follow the file formats as they change. scripts/fuzz.sh runs it into the
// build folder and passes the folders to the targets after the committed corpus.
#include <cryptopp/base64.h>
#include <cryptopp/crc.h>
#include <cryptopp/filters.h>
#include <cryptopp/rsa.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "intake/envelope.hpp"
#include "intake/ledger.hpp"
#include "intake/request.hpp"
#include "intake/spool.hpp"
#include "keystore/file_util.hpp"
#include "keystore/key_pair.hpp"

namespace {

using namespace pa;
namespace fs = std::filesystem;

// The plaintexts: the original server's request (seeds/python-provision-agent-guide.md) and the
// SPEC 3.1 fields.
const std::vector<std::pair<std::string, std::string>> kRequests = {
    {"provision/pH01/request",
     R"({"device_id": "pH01", "action": "generate_and_publish_key", "user_id": "5"})"},
    {"provision/pH01/request",
     R"({"device_id":"pH01","action":"generate","user_id":5,"request_id":"r-1","ts":1763892000,"force":true,"key_type":"ec-p256"})"},
    {"provision/ec01/update",
     R"({"device_id":"ec01","action":"rotate","request_id":"r-2","nonce":"n-2","timestamp":"2026-11-23T10:00:00.123456+01:00"})"},
    {"provision/ec01/delete", R"({"request_id":"r-3","ts":1763892001})"},
};

void write(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  fuzz::write_file(path, content);
}

// PKCS#1 "RSA PRIVATE KEY" from a PKCS#8 RSA key (PyCryptodome's default format).
std::string pkcs1_pem(const std::string& pkcs8_pem) {
  const auto block = keystore::pem_decode(pkcs8_pem, {"PRIVATE KEY"});
  CryptoPP::RSA::PrivateKey key;
  CryptoPP::ArraySource source(block.der.data(), block.der.size(), true);
  key.BERDecode(source);
  std::string der, body;
  CryptoPP::StringSink sink(der);
  key.DEREncodePrivateKey(sink);
  CryptoPP::StringSource(der, true,
                         new CryptoPP::Base64Encoder(new CryptoPP::StringSink(body), true, 64));
  return "-----BEGIN RSA PRIVATE KEY-----\n" + body + "-----END RSA PRIVATE KEY-----\n";
}

void write_seeds(const fs::path& out) {
  int count = 0;
  for (const auto& [topic, plaintext] : kRequests) {
    for (const char* mode : {"EAX", "GCM"}) {
      for (std::size_t key_size : {16, 24, 32}) {
        e2ee::SealOptions options;
        options.mode = mode;
        options.key_size = key_size;
        options.nonce_size = key_size == 24 ? 12 : 16;
        Envelope envelope = e2ee::seal_envelope(plaintext, fuzz::test_public_pem(), options);
        if (key_size == 32) e2ee::sign_envelope(envelope, fuzz::test_private_pem());
        const std::string json = e2ee::envelope_json(envelope);
        const std::string name = "sealed-" + std::to_string(++count);
        write(out / "envelope" / name, json);
        write(out / "request" / name, topic + "\n" + json);
      }
    }
  }
  // The test key itself (RSA-1024, which key loading refuses by size), then one pair per type.
  write(out / "pem" / "rsa-1024-pkcs8", fuzz::test_private_pem());
  write(out / "pem" / "rsa-1024-public", fuzz::test_public_pem());
  for (const auto type :
       {keystore::KeyType::rsa2048, keystore::KeyType::ec_p256, keystore::KeyType::ed25519}) {
    const keystore::KeyPair pair = keystore::generate_key_pair(type);
    const std::string name(keystore::to_string(type));
    write(out / "pem" / (name + "-pkcs8"), pair.private_pem);
    write(out / "pem" / (name + "-public"), pair.public_pem);
    write(out / "pem" / (name + "-both"), pair.private_pem + pair.public_pem);
    if (type == keystore::KeyType::rsa2048)
      write(out / "pem" / (name + "-pkcs1"), pkcs1_pem(pair.private_pem));
  }
}

// ledger (tests/fuzz/ledger/ledger_fuzz.cpp's input): the files a ledger left after recording
// these requests, followed by requests: the same ones again (at their own positions: the same
// messages after a crash), retries, other content under a used id, and new ones.
const std::vector<std::string> kLedgerLines = {
    R"({"request_id":"r-1"})",
    R"({"request_id":"r-2","user_id":"5","key_type":"ec-p256"})",
    R"({"nonce":"n-1","action":"generate"})",
    R"({"ts":1794999990})",
    R"(pH02/update {"timestamp":"2026-11-18T11:06:00.5Z"})",
    R"(pH01/delete {})",
    R"(ec01/update {"action":"rotate","force":true})",
    R"({"action":"publish_key","request_id":"r-3"})",
};
constexpr std::int64_t kLedgerNow = 1795000000;  // ledger_fuzz.cpp's kNow
constexpr std::uint64_t kLedgerEpoch = 7;

Request decode_line(const std::string& line) {
  InboundMessage message;
  message.topic = "provision/pH01/request";
  message.device_id = "pH01";
  message.payload = line;
  if (const std::size_t space = line.find(' '); space != std::string::npos && line[0] != '{') {
    const auto parsed = parse_request_topic("provision/" + line.substr(0, space), "provision");
    if (!parsed) throw std::runtime_error("bad seed topic: " + line);
    message.device_id = parsed->first;
    message.kind = parsed->second;
    message.payload = line.substr(space + 1);
  }
  const Decryptor none = [](const Envelope&, const std::string&) {
    return std::variant<std::string, RequestError>(RequestError{ErrorCode::decrypt_failed, "-"});
  };
  Decoded decoded = decode_request(message, 65536, none, fuzz::action_alias);
  if (!decoded.request) throw std::runtime_error("seed does not decode: " + line);
  return std::move(*decoded.request);
}

std::string read_or_empty(const fs::path& path) {
  return fs::exists(path) ? keystore::read_file(path) : std::string();
}

void write_ledger_seed(const fs::path& out, const std::string& name, std::size_t journal_max,
                       std::int64_t age, const std::string& journal_cut,
                       const std::vector<std::string>& requests) {
  const fs::path state = fs::temp_directory_path() / ("pa-fuzz-seeds-" + name);
  fs::remove_all(state);
  LedgerLimits limits;
  limits.journal_max = journal_max;
  {
    RequestLedger ledger(state, 300, limits);
    for (std::size_t n = 0; n < kLedgerLines.size(); ++n) {
      const Request request = decode_line(kLedgerLines[n]);
      const bool destructive = request.action == kActionUpdate || request.action == kActionDelete;
      const std::int64_t now_us = (kLedgerNow - age + static_cast<std::int64_t>(n)) * 1000000;
      const SpoolPosition at{kLedgerEpoch, 3 * n + 1};
      if (ledger.check(request, at, destructive, now_us).kind != LedgerVerdict::Kind::fresh)
        continue;
      ledger.record(request, at, at.seq + 1, R"({"status":"ok","n":)" + std::to_string(n) + "}",
                    request.action == kActionGenerate, destructive, now_us);
    }
  }
  std::string journal = read_or_empty(state / "ledger.journal");
  if (!journal_cut.empty()) journal = journal.substr(0, journal.rfind(journal_cut));
  std::string seed = read_or_empty(state / "ledger.json") + "--- ledger.journal ---\n" + journal +
                     "--- requests ---\n";
  for (const std::string& line : requests) seed += line + "\n";
  write(out / "ledger" / name, seed);
  fs::remove_all(state);
}

void write_ledger_seeds(const fs::path& out) {
  std::vector<std::string> retries = kLedgerLines;
  retries.insert(retries.end(), {R"({"request_id":"r-1","user_id":"6"})",
                                 R"({"request_id":"r-9","ts":1795000005})",
                                 R"(pH01/delete {"user_id":"5"})", R"({"ts":1795000009})"});
  write_ledger_seed(out, "crash-after-records", 1000, 30, "", retries);
  write_ledger_seed(out, "folded", 3, 30, "", retries);
  // A crash in the middle of an append: the last line has no end.
  write_ledger_seed(out, "torn-journal", 1000, 30, R"(,"response")", retries);
  // Recorded an hour ago: the duplicate window has passed, the ts window too.
  write_ledger_seed(out, "an-hour-ago", 3, 3600, "", retries);
  write_ledger_seed(out, "no-requests", 1000, 30, "", {});
}

// spool (tests/fuzz/spool/spool_fuzz.cpp's input): intake.spool files.
InboundMessage spooled(std::uint64_t seq, TopicKind kind, const std::string& device,
                       const std::string& payload) {
  InboundMessage message;
  message.seq = seq;
  message.kind = kind;
  message.device_id = device;
  message.topic = "provision/" + device + "/" +
                  (kind == TopicKind::request  ? "request"
                   : kind == TopicKind::update ? "update"
                                               : "delete");
  message.payload = payload;
  return message;
}

// A frame around any body, as the spool writes them (for bodies encode_* does not make).
std::string frame(const std::string& body) {
  std::string out;
  const auto length = static_cast<std::uint32_t>(body.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  std::uint32_t crc = 0;
  CryptoPP::CRC32C().CalculateDigest(reinterpret_cast<CryptoPP::byte*>(&crc),
                                     reinterpret_cast<const CryptoPP::byte*>(body.data()),
                                     body.size());
  out.append(reinterpret_cast<const char*>(&crc), 4);
  return out + body;
}

void write_spool_seeds(const fs::path& out) {
  const fs::path dir = out / "spool";
  constexpr std::uint64_t kEpoch = 0x5eed5eed5eed5eedu;
  constexpr std::int64_t kArrived = 1795000000000;
  const std::string header = encode_spool_header(kEpoch, 1);

  InboundMessage with_response = spooled(2, TopicKind::update, "ec01", R"({"action":"rotate"})");
  with_response.response_topic = "servers/s1/replies";
  with_response.correlation_data = std::string("\x00\x01corr", 6);
  InboundMessage expiring = spooled(3, TopicKind::remove, "pH02", R"({"request_id":"r-3"})");
  expiring.expires_at_ms = kArrived + 60000;
  const std::vector<std::string> frames = {
      header,
      encode_spool_request(spooled(1, TopicKind::request, "pH01", R"({"user_id":"5"})"), kArrived),
      encode_spool_request(with_response, kArrived + 1),
      encode_spool_intent(2, ChangeIntent{std::string("SHA256:") + std::string(43, 'A')}),
      encode_spool_request(expiring, kArrived + 2),
      encode_spool_intent(3, ChangeIntent{}),
      encode_spool_done(1),
      encode_spool_request(spooled(5, TopicKind::request, "pH01", ""), kArrived + 3),
  };
  std::string whole;
  for (const std::string& f : frames) whole += f;
  write(dir / "header-only", header);
  write(dir / "pending", whole);
  write(dir / "all-answered",
        whole + encode_spool_done(2) + encode_spool_done(3) + encode_spool_done(5));
  write(dir / "torn-tail", whole.substr(0, whole.size() - 7));
  write(dir / "torn-header", whole.substr(0, 5));
  std::string flipped = whole;
  flipped[header.size() + frames[1].size() + 5] ^= 0x40;  // the CRC of the second request
  write(dir / "flipped-crc", flipped);
  std::string flipped_body = whole;
  flipped_body[header.size() + 20] ^= 0x01;  // a byte of the first request's body
  write(dir / "flipped-body", flipped_body);
  write(dir / "no-header", whole.substr(header.size()));
  write(dir / "header-twice", header + header + frames[1]);
  write(dir / "seq-not-increasing",
        header + frames[1] + encode_spool_request(spooled(1, TopicKind::update, "pH01", "{}"), 0));
  write(dir / "done-unknown-seq", header + frames[1] + encode_spool_done(9));
  write(dir / "intent-unknown-seq", header + encode_spool_intent(4, ChangeIntent{}));
  write(dir / "unknown-type", header + frame("X") + frames[1]);
  write(dir / "trailing-bytes", header + frame(encode_spool_done(1).substr(8) + "!"));
  write(dir / "zero-epoch", encode_spool_header(0, 5) + frames[1]);
  write(dir / "next-seq-ahead", encode_spool_header(kEpoch, 1u << 20) + frames[1]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    write_seeds(argv[1]);
    write_ledger_seeds(argv[1]);
    write_spool_seeds(argv[1]);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "pa_fuzz_seeds: %s\n", error.what());
    return 1;
  }
  return 0;
}
