// hello_cpp - the example plugin again, as a C++ class through <provision/plugin.hpp>, built out of
// tree against the installed headers (see README.md, "Writing a plugin").
//
// It serves the custom action "hello_cpp": it logs a greeting and answers ok; for a device called
// "nobody" it answers invalid_request, to show how an exception becomes the response's error.
// Its option GREETING is PROVISION_PLUGIN_HELLO_CPP_GREETING.
#include <provision/plugin.hpp>

#include <string>

namespace {

class Hello {
 public:
  explicit Hello(const pa::sdk::Host& host) : greeting_(host.option("GREETING").value_or("hello")) {
    host.log(PA_LOG_INFO, "hello_cpp plugin ready");
  }

  void handle(pa::sdk::Call& call) const {
    if (call.device() == "nobody")
      throw pa::sdk::Error(PA_ERR_INVALID, "nobody is not greeted", "invalid_request");
    call.log(PA_LOG_INFO, greeting_ + ", " + call.device());
  }

 private:
  std::string greeting_;
};

constexpr pa_action kHello = {
    sizeof(pa_action), "hello_cpp", nullptr, 0, "logs a greeting and answers ok", {}};
constexpr const pa_action* kActions[] = {&kHello, nullptr};
constexpr pa_option kGreeting = {sizeof(pa_option),
                                 "GREETING",
                                 PA_OPTION_STRING,
                                 "hello",
                                 0,
                                 0,
                                 nullptr,
                                 "the word the greeting starts with",
                                 {}};
constexpr const pa_option* kOptions[] = {&kGreeting, nullptr};

}  // namespace

PA_SDK_PLUGIN(Hello, "hello_cpp", "1.0.0", "the example plugin in C++", kActions, kOptions)
