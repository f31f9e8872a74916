/* keygen: generate_and_publish_key, update and publish_key (SPEC sections 3.1 and 6). */
#include <string.h>

#include "provision/plugin.h"

static int keygen_init(const pa_host* host, void** state) {
  *state = (void*)host; /* the host table is all the state this plugin needs */
  return PA_OK;
}

static int keygen_handle(void* state, pa_call* call, const pa_request* request) {
  const pa_host* host = (const pa_host*)state;
  pa_host_handle* h = host->handle;
  if (strcmp(request->action, "publish_key") == 0) return host->publish_key(h, call);

  if (strcmp(request->action, "install_certificate") == 0) {
    const char* certificate = host->request_string(h, call, "certificate");
    if (!certificate) {
      host->set_error(h, call, "invalid_request",
                      "install_certificate needs \"certificate\": the PEM certificate (leaf first, "
                      "then an optional chain)");
      return PA_ERR_INVALID;
    }
    return host->install_certificate(h, call, certificate);
  }

  if (strcmp(request->action, "update") == 0) {
    int rc = host->key_generate(h, call, NULL, 1);
    return rc != PA_OK ? rc : host->publish_key(h, call);
  }

  /* generate_and_publish_key: idempotent unless forced. */
  int exists = 0;
  int rc = host->key_exists(h, call, &exists);
  if (rc != PA_OK) return rc;
  if (exists && !request->force) return host->publish_key(h, call);
  /* A forced replacement keeps the old pair as the backup generation, like update. */
  rc = host->key_generate(h, call, NULL, exists);
  return rc != PA_OK ? rc : host->publish_key(h, call);
}

static const char* const generate_aliases[] = {"request", "generate", NULL};
static const pa_action generate = {
    sizeof(pa_action),
    "generate_and_publish_key",
    generate_aliases,
    PA_ACTION_DESTRUCTIVE_FORCED | PA_ACTION_PUBLISHES_KEY,
    "publish the device's key, generating a pair first if it has none (or force is true)",
    {0}};
static const char* const update_aliases[] = {"rotate", NULL};
static const pa_action update = {
    sizeof(pa_action),
    "update",
    update_aliases,
    PA_ACTION_DESTRUCTIVE | PA_ACTION_PUBLISHES_KEY,
    "generate a new pair, keep the previous one as the backup generation, publish the new key",
    {0}};
static const pa_action publish_key = {sizeof(pa_action),
                                      "publish_key",
                                      NULL,
                                      PA_ACTION_PUBLISHES_KEY,
                                      "publish the device's existing key (not_found if none)",
                                      {0}};
/* Not destructive: a certificate that does not certify the current key is refused, so no E2EE
 * policy applies (SPEC section 5). */
static const pa_action install_certificate = {
    sizeof(pa_action),
    "install_certificate",
    NULL,
    0,
    "store a certificate for the device's current key (checked: key, dates, PROVISION_CA_FILE)",
    {0}};
static const pa_action* const keygen_actions[] = {&generate, &update, &publish_key,
                                                  &install_certificate, NULL};

static const pa_plugin keygen_plugin = {
    sizeof(pa_plugin),
    PA_PLUGIN_ABI_VERSION,
    "keygen",
    "1.1.0",
    "generates, rotates and publishes device key pairs, and installs their certificates",
    keygen_actions,
    NULL,
    keygen_init,
    keygen_handle,
    NULL,
    {0}};

PA_PLUGIN_DEFINE(keygen_plugin)
