/* revoke: delete (SPEC section 3.1): remove the device's keys and clear its retained key. */
#include "provision/plugin.h"

static int revoke_init(const pa_host* host, void** state) {
  *state = (void*)host;
  return PA_OK;
}

static int revoke_handle(void* state, pa_call* call, const pa_request* request) {
  const pa_host* host = (const pa_host*)state;
  (void)request;
  int rc = host->key_delete(call);
  if (rc != PA_OK && rc != PA_ERR_NOT_FOUND) return rc;
  /* Cleared even when there were no keys: a retained key someone planted on K/D/public must not
   * outlive the delete (SPEC section 3.5). */
  int cleared = host->clear_published_key(call);
  return rc != PA_OK ? rc : cleared;
}

static const char* const revoke_actions[] = {"delete", NULL};

static const pa_plugin revoke_plugin = {
    PA_PLUGIN_ABI_VERSION, sizeof(pa_plugin), "revoke", "1.0.0", revoke_actions,
    revoke_init,           revoke_handle,     NULL,     {0}};

PA_PLUGIN_EXPORT const pa_plugin* pa_plugin_entry(uint32_t host_abi_version) {
  return host_abi_version == PA_PLUGIN_ABI_VERSION ? &revoke_plugin : NULL;
}
