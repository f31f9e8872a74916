/*
 * provision/plugin.h - the whole plugin ABI of provision-agent, version 1 (SPEC section 6).
 *
 * A plugin is a shared object in PROVISION_PLUGIN_DIR. It exports exactly one symbol,
 * pa_plugin_describe(), declared below, which returns a descriptor: the ABI version, the plugin's
 * name and version, the actions it serves (each with its properties), the options it reads, and
 * its init / handle / shutdown functions. Only plain C types cross this boundary, so a plugin built
 * by any C or C++ compiler loads; provision/plugin.hpp adapts it to a C++ class.
 *
 * Writing one (C):
 *
 *   #include <provision/plugin.h>
 *   static const pa_action hello = {sizeof(pa_action), "hello", NULL, 0, "answers ok", {0}};
 *   static const pa_action* const actions[] = {&hello, NULL};
 *   static int init(const pa_host* host, void** state) { *state = (void*)host; return PA_OK; }
 *   static int handle(void* state, pa_call* call, const pa_request* request) { return PA_OK; }
 *   static const pa_plugin plugin = {sizeof(pa_plugin), PA_PLUGIN_ABI_VERSION, "hello", "1.0.0",
 *                                    "says hello", actions, NULL, init, handle, NULL, {0}};
 *   PA_PLUGIN_DEFINE(plugin)
 *
 * and build it with -fvisibility=hidden so that pa_plugin_describe is its only export.
 *
 * Handshake (the idea comes from mosquitto's versioned plugin API):
 *   1. The host calls pa_plugin_describe(PA_PLUGIN_ABI_VERSION).
 *   2. The plugin returns its descriptor if it supports that host version, NULL otherwise.
 *   3. The host refuses, with a log line saying why, a descriptor of another abi_version, one
 *      smaller than version 1's, or one missing a name, init or handle; an action that another
 *      plugin already serves stops start-up naming both plugins; options are read from the
 *      configuration and validated (a bad value stops start-up, exit status 78).
 *   4. init() once, handle() for each request, shutdown() once in reverse load order.
 *
 * Conventions, everywhere in this header:
 *   - Every struct starts with its size (size_t struct_size = sizeof as the writer compiled it).
 *     Structs only ever grow at their end and fields are never reordered, so either side reads
 *     only what the other knows about. Lists of structs are NULL-terminated arrays of pointers,
 *     so a grown struct never changes the stride of a list.
 *   - Every host function takes the host's handle (pa_host.handle) first: the host keeps no
 *     global state, and the handle tells it which plugin is calling.
 *   - Every function that can fail returns an int pa_status (PA_OK = 0); results come back
 *     through pointer arguments. Strings are NUL-terminated UTF-8.
 *   - Ownership: what the host passes stays the host's and is valid for the duration stated;
 *     what the plugin passes (descriptor, actions, options) must stay valid until shutdown()
 *     returns (static data is the usual choice), except that register_action() copies.
 *   - Threads: init() and shutdown() run on the main thread; handle() runs on worker threads,
 *     concurrently for different devices and never concurrently for one device. Host functions
 *     that take a pa_call may only be called from inside the handle() that received it, on its
 *     thread; the others are thread-safe.
 */
#ifndef PROVISION_PLUGIN_H
#define PROVISION_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. Frozen at the first release; bumped only for
 * incompatible changes (growth at the end of a struct is compatible). */
#define PA_PLUGIN_ABI_VERSION 1u

/* The single symbol a plugin exports. */
#define PA_PLUGIN_ENTRY_SYMBOL "pa_plugin_describe"

#if defined(__GNUC__)
#define PA_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define PA_PLUGIN_EXPORT
#endif

/* Status codes returned across the boundary, and what a request answered with one reports
 * (the SPEC section 3.3 code in brackets) unless the plugin called set_error(). */
typedef enum pa_status {
  PA_OK = 0,
  PA_ERR_NOT_FOUND = 1,   /* the device has no keys ("not_found") */
  PA_ERR_KEYGEN = 2,      /* key generation failed ("keygen_failed") */
  PA_ERR_STORAGE = 3,     /* the key store could not be read or written ("storage_failed") */
  PA_ERR_INVALID = 4,     /* an argument or request field was invalid ("invalid_request") */
  PA_ERR_PUBLISH = 5,     /* the broker client refused the message ("plugin_failed") */
  PA_ERR_FAILED = 6,      /* anything else ("plugin_failed") */
  PA_ERR_QUOTA = 7,       /* the key store is full: PROVISION_MAX_DEVICES ("quota_exceeded") */
  PA_ERR_UNSUPPORTED = 8, /* not available here, e.g. register_action() outside init()
                             ("plugin_failed") */
  PA_ERR_NO_MEMORY = 9    /* out of memory ("plugin_failed") */
} pa_status;

/* The name of a status ("PA_ERR_STORAGE"), for log lines; "PA_ERR_UNKNOWN" for other values. */
static inline const char* pa_status_name(int status) {
  switch (status) {
    case PA_OK:
      return "PA_OK";
    case PA_ERR_NOT_FOUND:
      return "PA_ERR_NOT_FOUND";
    case PA_ERR_KEYGEN:
      return "PA_ERR_KEYGEN";
    case PA_ERR_STORAGE:
      return "PA_ERR_STORAGE";
    case PA_ERR_INVALID:
      return "PA_ERR_INVALID";
    case PA_ERR_PUBLISH:
      return "PA_ERR_PUBLISH";
    case PA_ERR_FAILED:
      return "PA_ERR_FAILED";
    case PA_ERR_QUOTA:
      return "PA_ERR_QUOTA";
    case PA_ERR_UNSUPPORTED:
      return "PA_ERR_UNSUPPORTED";
    case PA_ERR_NO_MEMORY:
      return "PA_ERR_NO_MEMORY";
    default:
      return "PA_ERR_UNKNOWN";
  }
}

typedef enum pa_log_level {
  PA_LOG_DEBUG = 0,
  PA_LOG_INFO = 1,
  PA_LOG_WARNING = 2,
  PA_LOG_ERROR = 3
} pa_log_level;

/* The host's side, opaque to plugins. */
typedef struct pa_host_handle pa_host_handle; /* one per loaded plugin */
typedef struct pa_call pa_call;               /* one per request in handle() */

/* ---- Actions ------------------------------------------------------------------------------ */

/* Properties of an action: the core decides from these, never from action names, which requests
 * fall under the E2EE policy and the duplicate-delivery rule, and which answer publishes a key. */
#define PA_ACTION_DESTRUCTIVE 0x1u        /* replaces or removes the device's keys */
#define PA_ACTION_DESTRUCTIVE_FORCED 0x2u /* destructive when the request has "force": true */
#define PA_ACTION_PUBLISHES_KEY 0x4u      /* success publishes the device's public key */

typedef struct pa_action {
  size_t struct_size; /* sizeof(pa_action) */
  const char* name;   /* canonical name: 1-128 of A-Z a-z 0-9 . _ -, from a letter or digit */
  const char* const* aliases; /* other names requests may use (NULL-terminated), or NULL */
  uint32_t flags;             /* PA_ACTION_* */
  const char* help;           /* one line for `provision-agent plugins`, or NULL */
  void* reserved[4];          /* zero */
} pa_action;

/* ---- Options ------------------------------------------------------------------------------ */

/* A plugin's option NAME is read like the agent's own variables (environment, then --env-file)
 * as PROVISION_PLUGIN_<PLUGIN>_<NAME>, with <PLUGIN> the plugin's name in upper case and '-'
 * as '_'. The host validates it before init() (exit 78 naming the variable and value),
 * `provision-agent config` lists it, and option_get() returns it. */
typedef enum pa_option_type {
  PA_OPTION_STRING = 1, /* any text; with `choices`, one of them */
  PA_OPTION_INT = 2,    /* a decimal integer within [min, max] */
  PA_OPTION_BOOL = 3,   /* true/false, 1/0, yes/no, on/off; option_get returns "true"/"false" */
  PA_OPTION_PATH = 4    /* an absolute path */
} pa_option_type;

typedef struct pa_option {
  size_t struct_size; /* sizeof(pa_option) */
  const char* name;   /* upper case: A-Z 0-9 _ */
  pa_option_type type;
  const char* default_value;  /* as text, or NULL for "unset" */
  int64_t min;                /* PA_OPTION_INT */
  int64_t max;                /* PA_OPTION_INT */
  const char* const* choices; /* PA_OPTION_STRING: the allowed values (NULL-terminated), or NULL */
  const char* help;           /* one line for `config`, agent.env and the manual */
  void* reserved[4];          /* zero */
} pa_option;

/* ---- Requests ----------------------------------------------------------------------------- */

/* One request being handled. Owned by the host; valid only during the handle() call. */
typedef struct pa_request {
  size_t struct_size;     /* sizeof(pa_request) as the host knows it */
  const char* device_id;  /* validated identifier, never NULL */
  const char* user_id;    /* validated identifier, or NULL when the request has none */
  const char* action;     /* canonical action name (aliases already resolved), never NULL */
  const char* request_id; /* from the request, or NULL */
  const char* json;       /* the decoded request object as JSON text (after decryption, with
                             unique member names: exactly what the host validated) */
  int encrypted;          /* non-zero when the request arrived in an encrypted envelope */
  int force;              /* the request's "force" field */
  const char* key_type;   /* effective key type: the request's key_type or PROVISION_KEY_TYPE */
} pa_request;

/* ---- Host services ------------------------------------------------------------------------ */

/*
 * The table the host gives init(). Owned by the host and valid until shutdown() returns.
 * New members are appended at the end only: check struct_size before using one newer than 1.
 */
typedef struct pa_host {
  size_t struct_size;     /* sizeof(pa_host) as the host knows it */
  uint32_t abi_version;   /* PA_PLUGIN_ABI_VERSION of the host */
  pa_host_handle* handle; /* the first argument of every function below */

  /* Logs `message` (copied). With a call, the entry carries the request's device, user, action
   * and request id as structured fields (journalctl DEVICE_ID=...); call may be NULL (init()).
   * Returns PA_OK, or PA_ERR_INVALID for a NULL message. Any thread. */
  int (*log)(pa_host_handle* host, pa_call* call, pa_log_level level, const char* message);

  /* The effective value of one of the agent's configuration variables by its environment name
   * ("PROVISION_KEY_TYPE"), or NULL when unset or a secret (passwords are never returned). The
   * string stays valid until shutdown() returns. Any thread. */
  const char* (*config_get)(pa_host_handle* host, const char* name);

  /* The validated value of one of this plugin's own options by its name ("TIMEOUT"), its default
   * when not configured, or NULL when it has neither or the plugin declared no such option. The
   * string stays valid until shutdown() returns. Any thread. */
  const char* (*option_get)(pa_host_handle* host, const char* name);

  /* Adds an action this plugin serves, beyond those in its descriptor (e.g. one per script it
   * found). Only from inside init(). The host copies `action`. Returns PA_OK, PA_ERR_INVALID (a
   * bad name or struct_size), PA_ERR_FAILED (another plugin or this one serves it already; the
   * log says which) or PA_ERR_UNSUPPORTED (called outside init()). */
  int (*register_action)(pa_host_handle* host, const pa_action* action);

  /* Sets *exists to 1 when the request's device has a private key in the key store, else 0.
   * Returns PA_OK or PA_ERR_STORAGE. */
  int (*key_exists)(pa_host_handle* host, pa_call* call, int* exists);

  /* Generates a key pair of key_type (NULL: the request's effective key type) and stores it
   * atomically for the request's device; keep_backup non-zero keeps the previous pair as the one
   * backup generation (SPEC section 5). Served again after a crash, a change that was already
   * made is not made twice. Returns PA_OK, PA_ERR_INVALID (unknown key type), PA_ERR_KEYGEN,
   * PA_ERR_STORAGE or PA_ERR_QUOTA. */
  int (*key_generate)(pa_host_handle* host, pa_call* call, const char* key_type, int keep_backup);

  /* Removes the device's keys and backups (with a user, its legacy folder's too). Returns PA_OK,
   * PA_ERR_NOT_FOUND or PA_ERR_STORAGE. */
  int (*key_delete)(pa_host_handle* host, pa_call* call);

  /* Publishes the device's stored public key on K/D/public (SPEC section 3.2), repairing a
   * missing or mismatched public key file first, and records its fingerprint for the response.
   * Returns PA_OK, PA_ERR_NOT_FOUND, PA_ERR_STORAGE or PA_ERR_PUBLISH. */
  int (*publish_key)(pa_host_handle* host, pa_call* call);

  /* Clears the device's retained public key (an empty retained message on K/D/public).
   * Returns PA_OK or PA_ERR_PUBLISH. */
  int (*clear_published_key)(pa_host_handle* host, pa_call* call);

  /* Sets the error the response will carry: `code` one of SPEC section 3.3's codes (another
   * becomes "plugin_failed"), `message` a line for the requester (copied; never a secret).
   * When handle() fails without calling this, the code follows from the returned pa_status.
   * Returns PA_OK. */
  int (*set_error)(pa_host_handle* host, pa_call* call, const char* code, const char* message);

  /* A top-level string member of the request as the host validated it (e.g. "certificate"), or
   * NULL when it is absent or not a string. Valid until handle() returns. */
  const char* (*request_string)(pa_host_handle* host, pa_call* call, const char* name);

  /* Checks `pem` (the leaf certificate first, then an optional chain): it certifies the device's
   * current public key, it is within its validity dates, and with PROVISION_CA_FILE it chains
   * to that CA (SPEC section 5); then stores it atomically as the device's sensor_cert.pem.
   * Returns PA_OK, PA_ERR_NOT_FOUND (the device has no keys), PA_ERR_INVALID (the reason is the
   * response's invalid_request error; nothing is stored) or PA_ERR_STORAGE. */
  int (*install_certificate)(pa_host_handle* host, pa_call* call, const char* pem);

  void* reserved[8]; /* NULL; where later versions add functions */
} pa_host;

/* ---- The descriptor ----------------------------------------------------------------------- */

typedef struct pa_plugin {
  size_t struct_size;              /* sizeof(pa_plugin) the plugin was built with */
  uint32_t abi_version;            /* PA_PLUGIN_ABI_VERSION the plugin was built against */
  const char* name;                /* short unique name, e.g. "keygen": A-Z a-z 0-9 - _ */
  const char* version;             /* the plugin's own version */
  const char* description;         /* one line, or NULL */
  const pa_action* const* actions; /* what it serves (NULL-terminated), or NULL */
  const pa_option* const* options; /* what it reads (NULL-terminated), or NULL */

  /* Called once after loading, on the main thread, with the host table (valid until shutdown()
   * returns). Store plugin state in *state. Return PA_OK, or anything else to have the plugin
   * skipped (it is then not shut down and none of its actions is served). */
  int (*init)(const pa_host* host, void** state);

  /* Called on a worker thread for each request whose action this plugin serves. Return PA_OK on
   * success or a pa_status (optionally after host->set_error()). */
  int (*handle)(void* state, pa_call* call, const pa_request* request);

  /* Called once at exit on the main thread, after the last handle() returned. May be NULL. */
  void (*shutdown)(void* state);

  void* reserved[8]; /* NULL; room for the ABI to grow */
} pa_plugin;

/* The entry point every plugin defines (use PA_PLUGIN_DEFINE). Declared here so that a definition
 * with another signature does not compile. Returns the descriptor, or NULL when the plugin cannot
 * serve `host_abi_version`. Called once, on the main thread, before init(). */
PA_PLUGIN_EXPORT const pa_plugin* pa_plugin_describe(uint32_t host_abi_version);

/* Defines pa_plugin_describe() for a descriptor: the plugin never spells the symbol itself. */
#define PA_PLUGIN_DEFINE(descriptor)                                                \
  PA_PLUGIN_EXPORT const pa_plugin* pa_plugin_describe(uint32_t host_abi_version) { \
    return host_abi_version == PA_PLUGIN_ABI_VERSION ? &(descriptor) : NULL;        \
  }

/* The type of the entry point, for hosts that look it up with dlsym. */
typedef const pa_plugin* (*pa_plugin_describe_fn)(uint32_t host_abi_version);

#ifdef __cplusplus
}
#endif

#endif /* PROVISION_PLUGIN_H */
