/* revoke: delete (SPEC section 3.1): remove the device's keys and clear its retained key. */
#include "provision/plugin.h"

static int revoke_init(const pa_host* host, void** state) {
  *state = (void*)host;
  return PA_OK;
}

static int revoke_handle(void* state, pa_call* call, const pa_request* request) {
  const pa_host* host = (const pa_host*)state;
  (void)request;
  int rc = host->key_delete(host->handle, call);
  if (rc != PA_OK && rc != PA_ERR_NOT_FOUND) return rc;
  /* Cleared even when there were no keys: a retained key someone planted on K/D/public must not
   * outlive the delete (SPEC section 3.5). */
  int cleared = host->clear_published_key(host->handle, call);
  return rc != PA_OK ? rc : cleared;
}

static const pa_action delete_action = {
    sizeof(pa_action),
    "delete",
    NULL,
    PA_ACTION_DESTRUCTIVE,
    "remove the device's keys and backups and clear its retained public key",
    {0}};
static const pa_action* const revoke_actions[] = {&delete_action, NULL};

static const pa_plugin revoke_plugin = {sizeof(pa_plugin),
                                        PA_PLUGIN_ABI_VERSION,
                                        "revoke",
                                        "1.1.0",
                                        "deletes device key pairs",
                                        revoke_actions,
                                        NULL,
                                        revoke_init,
                                        revoke_handle,
                                        NULL,
                                        {0}};

PA_PLUGIN_DEFINE(revoke_plugin)
