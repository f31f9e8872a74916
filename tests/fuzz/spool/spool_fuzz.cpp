// The intake spool (SPEC section 3.4) as read back after a crash: read_spool_image, the pure
// reader of the file format (intake/spool.hpp), and the IntakeSpool constructor on a state folder
// holding the same bytes.
//
// Input: the bytes of intake.spool. Each input is tried as it is and with every frame's CRC-32C
// set right, so that mutations inside frame bodies get past the checksum.
//
// The image never claims more bytes than there are, and reading only its intact prefix gives the
// same image; pending requests come in strictly increasing sequence order, below next_seq. Their
// frames encoded anew (encode_spool_header, _request, _intent) read back as the same pending list.
// IntakeSpool recovers exactly the image's pending requests, keeps its epoch and sequence numbers,
// and leaves a file that reads back to the same on a second open; a request appended and one
// finished then are what a third open finds (unless its sequence numbers are used up: then the
// append is refused).
#include <cryptopp/crc.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.hpp"
#include "fuzz_support.hpp"
#include "intake/spool.hpp"
#include "keystore/file_util.hpp"

namespace {

using namespace pa;
namespace fs = std::filesystem;

constexpr std::size_t kFrameHeader = 8;
constexpr std::size_t kCapacity = 1 << 16;

std::uint32_t le32(std::string_view bytes) {
  std::uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | static_cast<std::uint8_t>(bytes[i]);
  return value;
}

// The input with every frame that fits given the CRC-32C of its body (in the digest's own byte
// order, as the spool writes it); stops at the first length that does not fit.
std::string with_crcs_set(std::string bytes) {
  std::size_t offset = 0;
  while (bytes.size() - offset >= kFrameHeader) {
    const std::uint32_t length = le32(std::string_view(bytes).substr(offset, 4));
    if (length == 0 || bytes.size() - offset - kFrameHeader < length) break;
    CryptoPP::CRC32C().CalculateDigest(
        reinterpret_cast<CryptoPP::byte*>(bytes.data() + offset + 4),
        reinterpret_cast<const CryptoPP::byte*>(bytes.data() + offset + kFrameHeader), length);
    offset += kFrameHeader + length;
  }
  return bytes;
}

std::string describe(const SpooledRequest& request) {
  const InboundMessage& m = request.message;
  std::string text =
      "seq " + std::to_string(m.seq) + " kind " + std::to_string(static_cast<int>(m.kind)) +
      " topic \"" + m.topic + "\" device \"" + m.device_id + "\" payload " +
      std::to_string(m.payload.size()) + " B expires " + std::to_string(m.expires_at_ms);
  if (m.response_topic) text += " response topic \"" + *m.response_topic + "\"";
  if (request.intent)
    text += request.intent->fingerprint_before ? " intent with key" : " intent without key";
  return text;
}

std::string describe(const std::vector<SpooledRequest>& requests) {
  std::string text = std::to_string(requests.size()) + " pending";
  for (const SpooledRequest& request : requests) text += "\n      " + describe(request);
  return text;
}

bool same_request(const SpooledRequest& a, const SpooledRequest& b) {
  const InboundMessage &x = a.message, &y = b.message;
  const bool same_intent =
      a.intent.has_value() == b.intent.has_value() &&
      (!a.intent || a.intent->fingerprint_before == b.intent->fingerprint_before);
  return x.seq == y.seq && x.kind == y.kind && x.topic == y.topic && x.device_id == y.device_id &&
         x.payload == y.payload && x.response_topic == y.response_topic &&
         x.correlation_data == y.correlation_data && x.expires_at_ms == y.expires_at_ms &&
         same_intent;
}

bool same_requests(const std::vector<SpooledRequest>& a, const std::vector<SpooledRequest>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_request(a[i], b[i])) return false;
  return true;
}

void check_same_image(const SpoolImage& a, const SpoolImage& b, const char* what) {
  const std::string context = std::string(what) + ": epoch " + std::to_string(a.epoch) + "/" +
                              std::to_string(b.epoch) + ", next " + std::to_string(a.next_seq) +
                              "/" + std::to_string(b.next_seq) + ", " + describe(a.pending) +
                              "\n    versus " + describe(b.pending);
  PA_FUZZ_CHECK(a.epoch == b.epoch && a.next_seq == b.next_seq, context);
  PA_FUZZ_CHECK(same_requests(a.pending, b.pending), context);
}

// What any image promises.
SpoolImage read_image(std::string_view bytes) {
  const SpoolImage image = read_spool_image(bytes);
  const std::string sizes = std::to_string(image.valid_bytes) + " valid of " +
                            std::to_string(bytes.size()) + ", " + std::to_string(image.frames) +
                            " frames";
  PA_FUZZ_CHECK(image.valid_bytes <= bytes.size(), sizes);
  PA_FUZZ_CHECK(image.next_seq >= 1, sizes);
  if (image.epoch == 0)
    PA_FUZZ_CHECK(image.pending.empty() && image.valid_bytes == 0 && image.frames == 0, sizes);
  else
    PA_FUZZ_CHECK(image.frames >= 1 && image.valid_bytes >= kFrameHeader + 17, sizes);
  // Sequence numbers only grow: the next one handed out is above every request in the file.
  std::uint64_t previous = 0;
  for (const SpooledRequest& request : image.pending) {
    PA_FUZZ_CHECK(request.message.seq > previous && request.message.seq < image.next_seq,
                  describe(image.pending) + "\n    next_seq " + std::to_string(image.next_seq));
    PA_FUZZ_CHECK(request.message.kind == TopicKind::request ||
                      request.message.kind == TopicKind::update ||
                      request.message.kind == TopicKind::remove,
                  describe(request));
    previous = request.message.seq;
  }
  return image;
}

// The pending requests as IntakeSpool rewrites them: the header, then each request's frames.
std::string encode_pending(const SpoolImage& image) {
  std::string bytes = encode_spool_header(image.epoch, image.next_seq);
  for (const SpooledRequest& request : image.pending) {
    bytes += encode_spool_request(request.message, 1795000000000);
    if (request.intent) bytes += encode_spool_intent(request.message.seq, *request.intent);
  }
  return bytes;
}

void check_pure(std::string_view bytes, const SpoolImage& image) {
  // What lies past the intact prefix changes nothing.
  const SpoolImage prefix = read_image(bytes.substr(0, image.valid_bytes));
  check_same_image(image, prefix, "the intact prefix alone");
  PA_FUZZ_CHECK(prefix.valid_bytes == image.valid_bytes && prefix.frames == image.frames,
                std::to_string(prefix.valid_bytes) + " != " + std::to_string(image.valid_bytes));
  if (image.epoch == 0) return;

  const std::string encoded = encode_pending(image);
  const SpoolImage again = read_image(encoded);
  check_same_image(image, again, "re-encoded");
  std::size_t frames = 1 + image.pending.size();
  for (const SpooledRequest& request : image.pending) frames += request.intent ? 1 : 0;
  PA_FUZZ_CHECK(again.valid_bytes == encoded.size() && again.frames == frames,
                std::to_string(again.valid_bytes) + " of " + std::to_string(encoded.size()));
}

std::string spool_file(const fs::path& state) {
  return keystore::read_file(state / "intake.spool");
}

// Opens the spool in `state`: it recovers `expected`, with `image`'s epoch (any when it has none)
// and sequence numbers, and leaves a file that reads back to the same.
SpoolImage open_and_check(const fs::path& state, const SpoolImage& image,
                          const std::vector<SpooledRequest>& expected, const char* what) {
  IntakeSpool spool(state, kCapacity);
  const std::vector<SpooledRequest> recovered = spool.take_recovered();
  PA_FUZZ_CHECK(same_requests(recovered, expected), std::string(what) + ": recovered " +
                                                        describe(recovered) + "\n    expected " +
                                                        describe(expected));
  PA_FUZZ_CHECK(spool.take_recovered().empty(), what);
  PA_FUZZ_CHECK(spool.epoch() != 0 && (image.epoch == 0 || spool.epoch() == image.epoch), what);
  const std::string bytes = spool_file(state);
  PA_FUZZ_CHECK(spool.file_size() == bytes.size(), what);
  const SpoolImage left = read_image(bytes);
  PA_FUZZ_CHECK(spool.last_seq() == image.next_seq - 1 && spool.pending() == expected.size(),
                std::string(what) + ": last seq " + std::to_string(spool.last_seq()));
  PA_FUZZ_CHECK(left.valid_bytes == bytes.size(), std::string(what) + ": left a damaged file");
  PA_FUZZ_CHECK(left.epoch == spool.epoch() && left.next_seq == image.next_seq &&
                    same_requests(left.pending, expected),
                std::string(what) + ": left " + describe(left.pending));
  return left;
}

void check_intake_spool(std::string_view bytes, const SpoolImage& image) {
  static const fuzz::ScratchDir scratch;
  const fs::path state = scratch.path() / "state";
  fs::remove_all(state);
  fs::create_directories(state);
  fuzz::write_file(state / "intake.spool", bytes);

  const SpoolImage first = open_and_check(state, image, image.pending, "first open");
  const SpoolImage second = open_and_check(state, first, image.pending, "second open");
  check_same_image(first, second, "the file after the second open");

  // Served on: one new request arrives, the oldest recovered one is answered.
  std::vector<SpooledRequest> expected = image.pending;
  SpoolImage after = second;
  {
    IntakeSpool spool(state, kCapacity);
    spool.take_recovered();
    SpooledRequest arrived;
    arrived.message.topic = "provision/pH01/request";
    arrived.message.device_id = "pH01";
    arrived.message.payload = R"({"request_id":"fuzz"})";
    std::string error;
    const IntakeSpool::Admission admission = spool.append(arrived.message, &error);
    if (image.next_seq < kSpoolSeqLimit) {
      PA_FUZZ_CHECK(admission == IntakeSpool::Admission::spooled, error);
      PA_FUZZ_CHECK(arrived.message.seq == image.next_seq, std::to_string(arrived.message.seq));
      expected.push_back(arrived);
      after.next_seq = arrived.message.seq + 1;
    } else {
      // Sequence numbers used up: refused, and nothing written.
      PA_FUZZ_CHECK(admission == IntakeSpool::Admission::failed && !error.empty(), error);
      PA_FUZZ_CHECK(arrived.message.seq == 0, std::to_string(arrived.message.seq));
    }
    if (!image.pending.empty()) {
      spool.finish(image.pending.front().message.seq);
      expected.erase(expected.begin());
    }
  }
  open_and_check(state, after, expected, "third open");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  log_init(LogLevel::error);  // every damaged input would log a warning
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input = fuzz::as_text(data, size);
  const std::string repaired = with_crcs_set(std::string(input));
  for (const std::string_view bytes : {input, std::string_view(repaired)}) {
    const SpoolImage image = read_image(bytes);
    check_pure(bytes, image);
    check_intake_spool(bytes, image);
    if (repaired == input) break;
  }
  return 0;
}
