/*
 * hello - the smallest useful third-party plugin for provision-agent, built out of tree
 * against the installed header <provision/plugin.h> (see README.md, "Writing a plugin").
 *
 * It serves the custom action "hello": it logs a greeting with the request's structured
 * fields and answers ok. HELLO_GREETING in the agent's environment (e.g. agent.env) changes
 * the word: host->config_get() answers only the agent's own variables (SPEC section 2), so a
 * plugin reads its own settings from the environment.
 */
#include <provision/plugin.h>

#include <stdio.h>
#include <stdlib.h>

static const pa_host* host;

static int hello_init(const pa_host* given, void** state) {
  /* Refuse a host older than the functions this plugin calls (the table only grows). */
  if (given->struct_size < offsetof(pa_host, log) + sizeof(given->log)) return PA_ERR_FAILED;
  host = given;
  *state = NULL;
  host->log(NULL, PA_LOG_INFO, "hello plugin ready");
  return PA_OK;
}

static int hello_handle(void* state, pa_call* call, const pa_request* request) {
  (void)state;
  const char* greeting = getenv("HELLO_GREETING");
  char message[256];
  snprintf(message, sizeof message, "%s, %s", greeting ? greeting : "hello", request->device_id);
  host->log(call, PA_LOG_INFO, message);
  return PA_OK;
}

static const char* const hello_actions[] = {"hello", NULL};

static const pa_plugin hello_plugin = {
    .abi_version = PA_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(pa_plugin),
    .name = "hello",
    .version = "1.0.0",
    .actions = hello_actions,
    .init = hello_init,
    .handle = hello_handle,
    .shutdown = NULL,
};

PA_PLUGIN_EXPORT const pa_plugin* pa_plugin_entry(uint32_t host_abi_version) {
  return host_abi_version == PA_PLUGIN_ABI_VERSION ? &hello_plugin : NULL;
}
