/*
 * provision/plugin.h - the whole plugin ABI of provision-agent (SPEC section 6).
 *
 * A plugin is a shared object in PROVISION_PLUGIN_DIR that exports one C symbol,
 * PA_PLUGIN_ENTRY_SYMBOL ("pa_plugin_entry"), of type pa_plugin_entry_fn. Only plain C
 * types cross this boundary, so a plugin built by any C or C++ compiler loads.
 *
 * Handshake (the idea comes from mosquitto's versioned plugin API):
 *   1. The host calls pa_plugin_entry(PA_PLUGIN_ABI_VERSION).
 *   2. The plugin returns a pointer to a static pa_plugin descriptor whose abi_version it
 *      supports, or NULL if it cannot serve that host version.
 *   3. The host refuses a descriptor whose abi_version differs from its own or whose
 *      struct_size is smaller than the host's sizeof(pa_plugin), and logs why.
 *   4. The host calls init() once, handle() for each request, shutdown() once, in reverse
 *      load order at exit.
 *
 * Growth rules: structs only ever grow at their end; every struct starts with its size so
 * either side can tell which fields the other knows about. Fields are never reordered.
 */
#ifndef PROVISION_PLUGIN_H
#define PROVISION_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. Bumped only for incompatible changes. */
#define PA_PLUGIN_ABI_VERSION 1u

/* The single symbol a plugin exports. */
#define PA_PLUGIN_ENTRY_SYMBOL "pa_plugin_entry"

/* Marks the entry point for export; build plugins with -fvisibility=hidden so nothing else is. */
#if defined(__GNUC__)
#define PA_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define PA_PLUGIN_EXPORT
#endif

/* Status codes returned across the boundary. */
typedef enum pa_status {
  PA_OK = 0,
  PA_ERR_NOT_FOUND = 1, /* the device has no keys (answered "not_found") */
  PA_ERR_KEYGEN = 2,    /* key generation failed ("keygen_failed") */
  PA_ERR_STORAGE = 3,   /* the key store could not be read or written ("storage_failed") */
  PA_ERR_INVALID = 4,   /* an argument or request field was invalid ("invalid_request") */
  PA_ERR_PUBLISH = 5,   /* the broker client refused the message ("plugin_failed") */
  PA_ERR_FAILED = 6     /* anything else ("plugin_failed") */
} pa_status;

typedef enum pa_log_level {
  PA_LOG_DEBUG = 0,
  PA_LOG_INFO = 1,
  PA_LOG_WARNING = 2,
  PA_LOG_ERROR = 3
} pa_log_level;

/* One request being handled. Owned by the host; valid only during the handle() call. */
typedef struct pa_request {
  size_t struct_size;     /* sizeof(pa_request) as the host knows it */
  const char* device_id;  /* validated identifier, never NULL */
  const char* user_id;    /* validated identifier, or NULL when the request has none */
  const char* action;     /* canonical action name (aliases already resolved), never NULL */
  const char* request_id; /* from the request, or NULL */
  const char* json;       /* the decoded request object as JSON text (after decryption) */
  int encrypted;          /* non-zero when the request arrived in an encrypted envelope */
  int force;              /* the request's "force" field */
  const char* key_type;   /* effective key type: the request's key_type or PROVISION_KEY_TYPE */
} pa_request;

/* Opaque per-request context; passed back to every host function a handler calls. */
typedef struct pa_call pa_call;

/*
 * Services the host gives plugins. Owned by the host and valid from init() until
 * shutdown() returns. Functions taking a pa_call may be called only from inside handle(),
 * on the worker thread that called it. All functions are thread-safe across calls.
 * New members are appended at the end only; check struct_size before using a newer one.
 */
typedef struct pa_host {
  size_t struct_size;   /* sizeof(pa_host) as the host knows it */
  uint32_t abi_version; /* PA_PLUGIN_ABI_VERSION of the host */

  /* Logs a message. With a call, the entry carries the request's device, user, action and
   * request id as structured fields. call may be NULL (e.g. from init()). */
  void (*log)(pa_call* call, pa_log_level level, const char* message);

  /* Returns the effective value of a configuration variable by its environment name
   * (e.g. "PROVISION_KEY_TYPE"), or NULL when unset. Secrets (passwords) are never returned.
   * The string stays valid until shutdown() returns. */
  const char* (*config_get)(const char* name);

  /* Returns 1 when the request's device has a private key in the key store, 0 when not,
   * a negative pa_status on a storage error. */
  int (*key_exists)(pa_call* call);

  /* Generates a key pair of key_type (NULL: the request's key_type) and stores it
   * atomically for the request's device. keep_backup non-zero keeps the previous pair as
   * the one backup generation (SPEC section 5). Returns PA_OK, PA_ERR_INVALID (unknown key
   * type), PA_ERR_KEYGEN or PA_ERR_STORAGE. */
  int (*key_generate)(pa_call* call, const char* key_type, int keep_backup);

  /* Removes the device's keys and backups. Returns PA_OK, PA_ERR_NOT_FOUND or PA_ERR_STORAGE. */
  int (*key_delete)(pa_call* call);

  /* Publishes the device's stored public key on K/D/public (SPEC section 3.2), repairing a
   * missing or mismatched public key file first, and records its fingerprint for the
   * response. Returns PA_OK, PA_ERR_NOT_FOUND, PA_ERR_STORAGE or PA_ERR_PUBLISH. */
  int (*publish_key)(pa_call* call);

  /* Clears the retained public key of the device (an empty retained message on K/D/public). */
  int (*clear_published_key)(pa_call* call);

  /* Sets the error the response will carry; code is one of the SPEC section 3.3 codes.
   * When a handler returns non-zero without calling this, the host derives the code from
   * the returned pa_status. */
  void (*set_error)(pa_call* call, const char* code, const char* message);
} pa_host;

/*
 * The descriptor a plugin returns from its entry point. It must stay valid until the
 * plugin is unloaded (a static object is the usual choice).
 */
typedef struct pa_plugin {
  uint32_t abi_version;       /* PA_PLUGIN_ABI_VERSION the plugin was built against */
  uint32_t struct_size;       /* sizeof(pa_plugin) the plugin was built with */
  const char* name;           /* short unique name, e.g. "keygen" */
  const char* version;        /* the plugin's own version string */
  const char* const* actions; /* NULL-terminated list of canonical actions it serves */

  /* Called once after loading, on the main thread. Store plugin state in *state.
   * Return PA_OK, or anything else to have the plugin skipped (it is then not shut down). */
  int (*init)(const pa_host* host, void** state);

  /* Called on a worker thread for each request whose action this plugin serves. Calls for
   * different devices run concurrently; calls for one device never overlap.
   * Return PA_OK on success or a pa_status (optionally after host->set_error()). */
  int (*handle)(void* state, pa_call* call, const pa_request* request);

  /* Called once at exit, on the main thread, after the last handle() returned. May be NULL. */
  void (*shutdown)(void* state);

  void* reserved[8]; /* zero; room for the ABI to grow without changing struct_size rules */
} pa_plugin;

/* The type of the exported entry point. */
typedef const pa_plugin* (*pa_plugin_entry_fn)(uint32_t host_abi_version);

#ifdef __cplusplus
}
#endif

#endif /* PROVISION_PLUGIN_H */
