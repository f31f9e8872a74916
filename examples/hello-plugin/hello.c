/*
 * hello - the smallest useful third-party plugin for provision-agent, in C, built out of tree
 * against the installed header <provision/plugin.h> (see README.md, "Writing a plugin"). The same
 * plugin in C++ is examples/hello-plugin-cpp.
 *
 * It serves the custom action "hello": it logs a greeting with the request's structured fields
 * and answers ok. Its one option, GREETING, is read by the agent like its own variables, as
 * PROVISION_PLUGIN_HELLO_GREETING (environment or agent.env), and listed by `provision-agent
 * config` and `plugins`.
 */
#include <provision/plugin.h>

#include <stdio.h>

static int hello_init(const pa_host* host, void** state) {
  /* Refuse a host older than the functions this plugin calls (the table only grows). */
  if (host->struct_size < offsetof(pa_host, set_error) + sizeof(host->set_error))
    return PA_ERR_UNSUPPORTED;
  *state = (void*)host;
  host->log(host->handle, NULL, PA_LOG_INFO, "hello plugin ready");
  return PA_OK;
}

static int hello_handle(void* state, pa_call* call, const pa_request* request) {
  const pa_host* host = (const pa_host*)state;
  /* Declared with a default, so never NULL. */
  const char* greeting = host->option_get(host->handle, "GREETING");
  char message[256];
  snprintf(message, sizeof message, "%s, %s", greeting, request->device_id);
  return host->log(host->handle, call, PA_LOG_INFO, message);
}

static const pa_action hello_action = {
    sizeof(pa_action), "hello", NULL, 0, "logs a greeting and answers ok", {0}};
static const pa_action* const hello_actions[] = {&hello_action, NULL};

static const pa_option greeting = {sizeof(pa_option),
                                   "GREETING",
                                   PA_OPTION_STRING,
                                   "hello",
                                   0,
                                   0,
                                   NULL,
                                   "the word the greeting starts with",
                                   {0}};
static const pa_option* const hello_options[] = {&greeting, NULL};

static const pa_plugin hello_plugin = {
    .struct_size = sizeof(pa_plugin),
    .abi_version = PA_PLUGIN_ABI_VERSION,
    .name = "hello",
    .version = "1.0.0",
    .description = "the example plugin in C",
    .actions = hello_actions,
    .options = hello_options,
    .init = hello_init,
    .handle = hello_handle,
    .shutdown = NULL,
};

PA_PLUGIN_DEFINE(hello_plugin)
