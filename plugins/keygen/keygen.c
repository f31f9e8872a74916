/* keygen: generate_and_publish_key, update and publish_key (SPEC sections 3.1 and 6). */
#include <string.h>

#include "provision/plugin.h"

static int keygen_init(const pa_host* host, void** state) {
  *state = (void*)host; /* the host table is all the state this plugin needs */
  return PA_OK;
}

static int keygen_handle(void* state, pa_call* call, const pa_request* request) {
  const pa_host* host = (const pa_host*)state;
  if (strcmp(request->action, "publish_key") == 0) return host->publish_key(call);

  if (strcmp(request->action, "update") == 0) {
    int rc = host->key_generate(call, NULL, 1);
    return rc != PA_OK ? rc : host->publish_key(call);
  }

  /* generate_and_publish_key: idempotent unless forced. */
  int exists = host->key_exists(call);
  if (exists < 0) return -exists;
  if (exists == 1 && !request->force) return host->publish_key(call);
  /* A forced replacement keeps the old pair as the backup generation, like update. */
  int rc = host->key_generate(call, NULL, exists == 1);
  return rc != PA_OK ? rc : host->publish_key(call);
}

static const char* const keygen_actions[] = {"generate_and_publish_key", "update", "publish_key",
                                             NULL};

static const pa_plugin keygen_plugin = {
    PA_PLUGIN_ABI_VERSION, sizeof(pa_plugin), "keygen", "1.0.0", keygen_actions,
    keygen_init,           keygen_handle,     NULL,     {0}};

PA_PLUGIN_EXPORT const pa_plugin* pa_plugin_entry(uint32_t host_abi_version) {
  return host_abi_version == PA_PLUGIN_ABI_VERSION ? &keygen_plugin : NULL;
}
