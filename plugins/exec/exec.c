/*
 * exec: maps custom actions to executables (SPEC section 6).
 *
 * Every executable file in the folder exec.d beside this plugin (so
 * <PROVISION_PLUGIN_DIR>/exec.d/) whose name is a valid action name serves the action of that
 * name. It runs with the request JSON on stdin and DEVICE_ID, USER_ID, ACTION, REQUEST_ID and
 * ENCRYPTED in its environment, and must exit 0 within PROVISION_EXEC_TIMEOUT seconds; otherwise
 * the request is answered plugin_failed. Its output is logged. An executable that is group- or
 * world-writable is not used, like any plugin file.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "provision/plugin.h"

#define EXEC_MAX_ACTIONS 64
#define EXEC_NAME_MAX 128
#define EXEC_OUTPUT_MAX 2048

/* The descriptor is static data the host reads after pa_plugin_entry returns, so the action list
 * it points to is filled there, once per load. */
static char exec_dir[PATH_MAX];
static char action_names[EXEC_MAX_ACTIONS][EXEC_NAME_MAX + 1];
static const char* actions[EXEC_MAX_ACTIONS + 1];

typedef struct exec_state {
  const pa_host* host;
  int timeout_seconds;
} exec_state;

static int valid_action_name(const char* name) {
  size_t length = strlen(name);
  if (length == 0 || length > EXEC_NAME_MAX) return 0;
  for (size_t i = 0; i < length; ++i) {
    char c = name[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-'))) return 0;
  }
  return 1;
}

static int usable_executable(int dir_fd, const char* name) {
  struct stat st;
  if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
  return S_ISREG(st.st_mode) && (st.st_mode & S_IXUSR) && !(st.st_mode & (S_IWGRP | S_IWOTH)) &&
         (st.st_uid == geteuid() || st.st_uid == 0);
}

static void find_actions(void) {
  Dl_info info;
  size_t count = 0;
  actions[0] = NULL;
  if (!dladdr((const void*)&find_actions, &info) || !info.dli_fname) return;
  const char* slash = strrchr(info.dli_fname, '/');
  size_t dir_length = slash ? (size_t)(slash - info.dli_fname) : 1;
  if (snprintf(exec_dir, sizeof exec_dir, "%.*s/exec.d", (int)dir_length,
               slash ? info.dli_fname : ".") >= (int)sizeof exec_dir)
    return;
  struct dirent** entries = NULL;
  int n = scandir(exec_dir, &entries, NULL, alphasort);
  if (n < 0) return;
  int dir_fd = open(exec_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (int i = 0; i < n; ++i) {
    const char* name = entries[i]->d_name;
    if (dir_fd >= 0 && count < EXEC_MAX_ACTIONS && valid_action_name(name) &&
        usable_executable(dir_fd, name)) {
      snprintf(action_names[count], sizeof action_names[count], "%s", name);
      actions[count] = action_names[count];
      ++count;
    }
    free(entries[i]);
  }
  free(entries);
  if (dir_fd >= 0) close(dir_fd);
  actions[count] = NULL;
}

static int exec_init(const pa_host* host, void** state) {
  exec_state* s = calloc(1, sizeof *s);
  if (!s) return PA_ERR_FAILED;
  s->host = host;
  s->timeout_seconds = 30;
  const char* timeout = host->config_get("PROVISION_EXEC_TIMEOUT");
  if (timeout && atoi(timeout) > 0) s->timeout_seconds = atoi(timeout);
  char message[PATH_MAX + 64];
  snprintf(message, sizeof message, "exec actions from %s, %d s time limit", exec_dir,
           s->timeout_seconds);
  host->log(NULL, PA_LOG_INFO, message);
  *state = s;
  return PA_OK;
}

static void exec_shutdown(void* state) {
  free(state);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Environment entries built before spawning: nothing after posix_spawn may allocate. */
static void env_entry(char* buffer, size_t size, const char* name, const char* value) {
  snprintf(buffer, size, "%s=%s", name, value ? value : "");
}

static int exec_handle(void* state, pa_call* call, const pa_request* request) {
  const exec_state* s = (const exec_state*)state;
  const pa_host* host = s->host;
  char path[PATH_MAX];
  char message[EXEC_OUTPUT_MAX + PATH_MAX + 256];
  if (snprintf(path, sizeof path, "%s/%s", exec_dir, request->action) >= (int)sizeof path) {
    host->set_error(call, "plugin_failed", "action path too long");
    return PA_ERR_FAILED;
  }

  char device[EXEC_NAME_MAX + 16], user[EXEC_NAME_MAX + 16], action[EXEC_NAME_MAX + 16];
  char request_id[300], encrypted[16];
  env_entry(device, sizeof device, "DEVICE_ID", request->device_id);
  env_entry(user, sizeof user, "USER_ID", request->user_id);
  env_entry(action, sizeof action, "ACTION", request->action);
  env_entry(request_id, sizeof request_id, "REQUEST_ID", request->request_id);
  env_entry(encrypted, sizeof encrypted, "ENCRYPTED", request->encrypted ? "1" : "0");
  char* envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin",
                  "LANG=C.UTF-8",
                  device,
                  user,
                  action,
                  request_id,
                  encrypted,
                  NULL};
  char* argv[] = {path, NULL};

  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0) return PA_ERR_FAILED;
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return PA_ERR_FAILED;
  }
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_adddup2(&files, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&files, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&files, out[1], STDERR_FILENO);
  posix_spawn_file_actions_addclosefrom_np(&files, 3);
  /* Its own process group, so the time limit also stops whatever a script started. */
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, path, &files, &attributes, argv, envp);
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&files);
  close(in[0]);
  close(out[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    snprintf(message, sizeof message, "cannot run %s: %s", path, strerror(rc));
    host->set_error(call, "plugin_failed", message);
    return PA_ERR_FAILED;
  }

  /* Feed stdin and collect output together, so neither side can block the other. */
  const char* input = request->json;
  size_t input_left = strlen(input);
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  char output[EXEC_OUTPUT_MAX + 1];
  size_t output_length = 0;
  const long long deadline = now_ms() + (long long)s->timeout_seconds * 1000;
  int out_open = 1, in_open = 1, timed_out = 0;
  if (input_left == 0) {
    close(in[1]);
    in_open = 0;
  }
  while (out_open) {
    long long left = deadline - now_ms();
    if (left <= 0) {
      timed_out = 1;
      break;
    }
    struct pollfd fds[2] = {{out[0], POLLIN, 0}, {in_open ? in[1] : -1, POLLOUT, 0}};
    if (poll(fds, 2, (int)(left > 1000 ? 1000 : left)) < 0 && errno != EINTR) break;
    if (in_open && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t written = write(in[1], input, input_left);
      if (written > 0) {
        input += written;
        input_left -= (size_t)written;
      }
      if (input_left == 0 || (written < 0 && errno != EAGAIN)) {
        close(in[1]);
        in_open = 0;
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char chunk[512];
      ssize_t got = read(out[0], chunk, sizeof chunk);
      if (got <= 0) {
        out_open = 0;
      } else if (output_length < EXEC_OUTPUT_MAX) {
        size_t keep = (size_t)got < EXEC_OUTPUT_MAX - output_length
                          ? (size_t)got
                          : EXEC_OUTPUT_MAX - output_length;
        memcpy(output + output_length, chunk, keep);
        output_length += keep;
      }
    }
  }
  if (in_open) close(in[1]);
  close(out[0]);
  output[output_length] = '\0';

  int status = 0;
  while (!timed_out && waitpid(pid, &status, WNOHANG) == 0) {
    if (now_ms() >= deadline) {
      timed_out = 1;
      break;
    }
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  if (timed_out) {
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
    snprintf(message, sizeof message, "%s did not finish within %d s and was killed",
             request->action, s->timeout_seconds);
    host->set_error(call, "plugin_failed", message);
    host->log(call, PA_LOG_WARNING, message);
    return PA_ERR_FAILED;
  }
  if (output_length > 0) {
    snprintf(message, sizeof message, "%s said: %s", request->action, output);
    host->log(call, PA_LOG_INFO, message);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return PA_OK;
  if (WIFEXITED(status))
    snprintf(message, sizeof message, "%s exited with status %d", request->action,
             WEXITSTATUS(status));
  else
    snprintf(message, sizeof message, "%s was killed by signal %d", request->action,
             WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  host->set_error(call, "plugin_failed", message);
  return PA_ERR_FAILED;
}

static const pa_plugin exec_plugin = {
    PA_PLUGIN_ABI_VERSION, sizeof(pa_plugin), "exec", "1.0.0", actions, exec_init,
    exec_handle,           exec_shutdown,     {0}};

PA_PLUGIN_EXPORT const pa_plugin* pa_plugin_entry(uint32_t host_abi_version) {
  if (host_abi_version != PA_PLUGIN_ABI_VERSION) return NULL;
  find_actions();
  return &exec_plugin;
}
