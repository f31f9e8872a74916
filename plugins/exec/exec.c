/*
 * exec: maps custom actions to executables (SPEC section 6).
 *
 * Every executable file in the folder exec.d beside this plugin (so
 * <PROVISION_PLUGIN_DIR>/exec.d/) whose name is a valid action name serves the action of that
 * name (registered in init). It runs with the request JSON on stdin and DEVICE_ID, USER_ID, ACTION,
 * REQUEST_ID and ENCRYPTED in its environment, and must exit 0 within the TIMEOUT option's seconds
 * (PROVISION_PLUGIN_EXEC_TIMEOUT); otherwise the request is answered plugin_failed. Its output is
 * logged. The DIR option (PROVISION_PLUGIN_EXEC_DIR) names another folder than exec.d.
 *
 * Its checks are as strict as the loader's: exec.d and each executable must be owned by the
 * agent's user or root and not be group- or world-writable. A loose exec.d serves no actions. At
 * request time the executable is opened O_NOFOLLOW relative to the exec.d descriptor taken at
 * start, checked again on that descriptor and run from it (fexecve), so a file swapped in after
 * start is held to the same rules and a symbolic link is never followed.
 *
 * Each run has a supervisor: a child of the agent that is a child subreaper, so everything the
 * executable starts - also what left its process group or double-forked - ends up its child.
 * It starts the executable with default signal dispositions and an empty mask, waits for its
 * exit (not the end of its output) or its time limit, kills its process group at the time limit,
 * then kills and reaps every descendant left, and reports to the worker through a pipe.
 *
 * The agent is multi-threaded, so both children make only async-signal-safe calls (no malloc,
 * no stdio): everything they need is prepared before fork.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "provision/plugin.h"

#define EXEC_NAME_MAX 128
#define EXEC_OUTPUT_MAX 2048
/* How long the supervisor tries to kill what an executable left behind. */
#define EXEC_CLEANUP_MS 5000
/* How long past the time limit and the clean-up the worker waits for the supervisor's report. */
#define EXEC_REPORT_GRACE_MS 5000

typedef struct exec_state {
  const pa_host* host;
  int timeout_seconds;
  int dir_fd; /* exec.d as found at start; executables are opened relative to it */
  char dir[PATH_MAX];
} exec_state;

/* snprintf for messages and paths, where cutting a very long one short is fine (and where gcc
 * would otherwise warn that it may happen). */
__attribute__((format(printf, 3, 4))) static void print_to(char* buffer, size_t size,
                                                           const char* format, ...) {
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(buffer, size, format, arguments);
  va_end(arguments);
}

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

/* What is wrong with a folder or file the agent runs code from, in the loader's words
 * ("is owned by uid 1000, not 0", "is group-writable (mode 0775)") and the command that fixes it.
 * Returns 0 when nothing is. */
static int ownership_problem(const struct stat* st, const char* path, char* why, size_t why_size,
                             char* fix, size_t fix_size) {
  const uid_t euid = geteuid();
  const int foreign = st->st_uid != euid && st->st_uid != 0;
  const int group = (st->st_mode & S_IWGRP) != 0;
  const int world = (st->st_mode & S_IWOTH) != 0;
  if (!foreign && !group && !world) return 0;
  char owner_why[64] = "", mode_why[64] = "", owner_fix[PATH_MAX + 32] = "",
       mode_fix[PATH_MAX + 32] = "";
  if (foreign) {
    print_to(owner_why, sizeof owner_why, "is owned by uid %u, not %u", (unsigned)st->st_uid,
             (unsigned)euid);
    print_to(owner_fix, sizeof owner_fix, "chown %u %s", (unsigned)euid, path);
  }
  if (group || world) {
    print_to(mode_why, sizeof mode_why, "is %s (mode %04o)",
             group && world ? "group- and world-writable"
             : group        ? "group-writable"
                            : "world-writable",
             (unsigned)(st->st_mode & 07777));
    print_to(mode_fix, sizeof mode_fix, "chmod %o %s", (unsigned)(st->st_mode & 07755), path);
  }
  const int both = foreign && (group || world);
  print_to(why, why_size, "%s%s%s", owner_why, both ? ", and " : "", mode_why);
  print_to(fix, fix_size, "%s%s%s", owner_fix, both ? " && " : "", mode_fix);
  return 1;
}

static void log_line(const pa_host* host, pa_log_level level, const char* line) {
  host->log(host->handle, NULL, level, line);
}

/* The folder the DIR option names, else exec.d beside this plugin's file. */
static int locate_exec_dir(const pa_host* host, char* dir, size_t size) {
  const char* configured = host->option_get(host->handle, "DIR");
  if (configured) {
    print_to(dir, size, "%s", configured);
    return 0;
  }
  Dl_info info;
  if (!dladdr((const void*)&locate_exec_dir, &info) || !info.dli_fname) return -1;
  const char* slash = strrchr(info.dli_fname, '/');
  size_t dir_length = slash ? (size_t)(slash - info.dli_fname) : 1;
  if (snprintf(dir, size, "%.*s/exec.d", (int)dir_length, slash ? info.dli_fname : ".") >=
      (int)size)
    return -1;
  return 0;
}

/* Opens exec.d, checks it, and registers one action per usable executable in it. */
static void find_actions(exec_state* s) {
  const pa_host* host = s->host;
  char line[3 * PATH_MAX];
  s->dir_fd = -1;
  if (locate_exec_dir(host, s->dir, sizeof s->dir) != 0) {
    log_line(host, PA_LOG_WARNING, "cannot tell where exec.d is, so no exec actions are served");
    return;
  }
  /* A link named exec.d is followed like PROVISION_PLUGIN_DIR is: what counts is the folder it
   * leads to, and that is what is checked and kept open. */
  int dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    if (errno != ENOENT) {
      print_to(line, sizeof line, "cannot open %s: %s, so no exec actions are served", s->dir,
               strerror(errno));
      log_line(host, PA_LOG_WARNING, line);
    }
    return;
  }
  struct stat st;
  char why[160], fix[2 * PATH_MAX + 80];
  int problem = fstat(dir_fd, &st) != 0;
  if (problem) {
    print_to(why, sizeof why, "cannot be checked: %s", strerror(errno));
    print_to(fix, sizeof fix, "ls -ld %s", s->dir);
  } else {
    problem = ownership_problem(&st, s->dir, why, sizeof why, fix, sizeof fix);
  }
  if (problem) {
    print_to(line, sizeof line, "%s %s, so no exec actions are served from it; fix: %s", s->dir,
             why, fix);
    log_line(host, PA_LOG_WARNING, line);
    close(dir_fd);
    return;
  }
  struct dirent** entries = NULL;
  int n = scandirat(dir_fd, ".", &entries, NULL, alphasort);
  for (int i = 0; i < n; ++i) {
    const char* name = entries[i]->d_name;
    char path[PATH_MAX + EXEC_NAME_MAX + 2];
    print_to(path, sizeof path, "%s/%s", s->dir, name);
    if (valid_action_name(name) && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (S_ISLNK(st.st_mode)) {
        print_to(line, sizeof line,
                 "%s is a symbolic link, so the action \"%s\" is not served (exec runs only "
                 "regular files); fix: replace it with the file it points to",
                 path, name);
        log_line(host, PA_LOG_WARNING, line);
      } else if (S_ISREG(st.st_mode) && (st.st_mode & S_IXUSR)) {
        if (ownership_problem(&st, path, why, sizeof why, fix, sizeof fix)) {
          print_to(line, sizeof line, "%s %s, so the action \"%s\" is not served; fix: %s", path,
                   why, name, fix);
          log_line(host, PA_LOG_WARNING, line);
        } else {
          /* Nothing is known about what a script does to keys: no properties. */
          const pa_action action = {sizeof(pa_action),         name, NULL, 0,
                                    "an executable in exec.d", {0}};
          host->register_action(host->handle, &action);
        }
      }
    }
    free(entries[i]);
  }
  free(entries);
  s->dir_fd = dir_fd;
}

static int exec_init(const pa_host* host, void** state) {
  exec_state* s = calloc(1, sizeof *s);
  if (!s) return PA_ERR_NO_MEMORY;
  s->host = host;
  /* Declared 1..3600 with a default: the host has validated it. */
  s->timeout_seconds = atoi(host->option_get(host->handle, "TIMEOUT"));
  find_actions(s);
  char message[PATH_MAX + 64];
  print_to(message, sizeof message, "exec actions from %s, %d s time limit", s->dir,
           s->timeout_seconds);
  log_line(host, PA_LOG_INFO, message);
  *state = s;
  return PA_OK;
}

static void exec_shutdown(void* state) {
  exec_state* s = (exec_state*)state;
  if (s->dir_fd >= 0) close(s->dir_fd);
  free(s);
}

/* ---- What the children do: async-signal-safe calls only. ---- */

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What the supervisor tells the worker: one write smaller than PIPE_BUF, so it arrives whole. */
typedef struct run_report {
  int exec_error;         /* errno of a failed fexecve; 0 when the executable started */
  int timed_out;          /* it ran into its time limit and was killed */
  int status;             /* its waitpid status */
  int leftovers;          /* processes it left behind that were killed */
  int cleanup_incomplete; /* some would not die within EXEC_CLEANUP_MS */
} run_report;

/* Everything the children need, prepared before fork. */
typedef struct run_plan {
  int stdin_fd;      /* read end of the request pipe */
  int output_fd;     /* write end of the output pipe */
  int report_fd;     /* write end of the report pipe */
  int executable_fd; /* the checked executable */
  int is_script;     /* starts with "#!": its interpreter reads it through /dev/fd/3 */
  char* const* argv;
  char* const* envp;
  long long time_limit_ms;
  pid_t agent_pid;
} run_plan;

static void close_from(int first) {
  if (close_range((unsigned)first, ~0U, 0) == 0) return;
  struct rlimit limit;
  int last =
      getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 65536 ? (int)limit.rlim_cur : 65536;
  for (int fd = first; fd < last; ++fd) close(fd);
}

/* Puts fds[i] at descriptor i and closes every other one. Each is first copied above all of
 * them, so a source that is also a target is not overwritten before it is used. */
static int place_descriptors(const int* fds, int count) {
  int copies[8];
  int above = count;
  for (int i = 0; i < count; ++i)
    if (fds[i] >= above) above = fds[i] + 1;
  for (int i = 0; i < count; ++i)
    if ((copies[i] = fcntl(fds[i], F_DUPFD, above)) < 0) return -1;
  for (int i = 0; i < count; ++i)
    if (dup2(copies[i], i) < 0) return -1;
  close_from(count);
  return 0;
}

/* The parent pid and state of a process from /proc/<pid>/stat; 0 when it is gone. */
static int read_parent(pid_t pid, pid_t* parent, char* state) {
  char path[32] = "/proc/", digits[16];
  int length = 0;
  for (unsigned value = (unsigned)pid; length == 0 || value; value /= 10)
    digits[length++] = (char)('0' + value % 10);
  size_t at = strlen(path);
  while (length) path[at++] = digits[--length];
  memcpy(path + at, "/stat", 6);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[256];
  ssize_t got = read(fd, text, sizeof text - 1);
  close(fd);
  if (got <= 0) return 0;
  text[got] = '\0';
  /* "pid (comm) S ppid ...": comm may hold anything, so the last ')' ends it. */
  char* close_paren = strrchr(text, ')');
  if (!close_paren || close_paren[1] != ' ' || !close_paren[2] || close_paren[3] != ' ') return 0;
  *state = close_paren[2];
  pid_t value = 0;
  for (const char* c = close_paren + 4; *c >= '0' && *c <= '9'; ++c)
    value = value * 10 + (*c - '0');
  *parent = value;
  return 1;
}

/* SIGKILLs every live child of this process; returns how many of them were not killed before
 * (remembered in `killed`). Orphans reparent to the supervisor, so the whole tree comes by. */
static int kill_children(pid_t skip, pid_t* killed, int* killed_count, int killed_max) {
  int newly = 0;
  const pid_t self = getpid();
  int proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (proc < 0) return 0;
  char buffer[4096] __attribute__((aligned(8)));
  ssize_t got;
  while ((got = getdents64(proc, buffer, sizeof buffer)) > 0) {
    for (ssize_t at = 0; at < got;) {
      const struct dirent64* entry = (const struct dirent64*)(buffer + at);
      at += entry->d_reclen;
      pid_t pid = 0;
      const char* c = entry->d_name;
      for (; *c >= '0' && *c <= '9'; ++c) pid = pid * 10 + (*c - '0');
      pid_t parent = 0;
      char state = 0;
      if (*c || pid <= 0 || !read_parent(pid, &parent, &state)) continue;
      if (parent != self || state == 'Z') continue;
      kill(pid, SIGKILL);
      if (pid == skip) continue;
      int seen = 0;
      for (int i = 0; i < *killed_count; ++i) seen |= killed[i] == pid;
      if (seen) continue;
      ++newly;
      if (*killed_count < killed_max) killed[(*killed_count)++] = pid;
    }
  }
  close(proc);
  return newly;
}

/* Waits up to `ms` for SIGCHLD or SIGHUP (blocked, so they stay pending until taken here). */
static int wait_signal(long long ms) {
  sigset_t wake;
  sigemptyset(&wake);
  sigaddset(&wake, SIGCHLD);
  sigaddset(&wake, SIGHUP);
  struct timespec timeout = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  return sigtimedwait(&wake, NULL, &timeout);
}

/* The executable's process: descriptors 0-2 on the pipes, the executable on 3, then fexecve. */
static void run_executable(const run_plan* plan, int exec_error_fd) {
  /* The supervisor put stdin on 0, output on 1 and 2, the executable on 4. */
  const int fds[] = {0, 1, 1, 4, exec_error_fd};
  if (place_descriptors(fds, 5) == 0) {
    fcntl(4, F_SETFD, FD_CLOEXEC);
    /* The kernel starts an interpreter on "/dev/fd/3", so a script's descriptor must survive the
     * exec (with close-on-exec, execveat fails with ENOENT); a program's need not. */
    if (!plan->is_script) fcntl(3, F_SETFD, FD_CLOEXEC);
    setpgid(0, 0); /* its own group, killed at the time limit */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    fexecve(3, plan->argv, plan->envp);
  }
  const int error = errno;
  const ssize_t sent = write(4, &error, sizeof error);
  _exit(sent == (ssize_t)sizeof error ? 127 : 126);
}

/* The supervisor: runs the executable, waits for its exit or time limit, kills and reaps every
 * descendant, reports. Starts with every signal blocked (the worker forks it so). */
static void supervise(const run_plan* plan) {
  run_report report = {0, 0, 0, 0, 0};
  const long long deadline = now_ms() + plan->time_limit_ms;
  /* The agent's handlers and ignored signals are not the executable's; default dispositions
   * here are inherited by it (a handler would be reset by exec, an ignored signal would not). */
  struct sigaction default_action;
  memset(&default_action, 0, sizeof default_action);
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &default_action, NULL);
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  /* If the agent dies, SIGHUP (waited for below) has this clean up rather than leave orphans. */
  prctl(PR_SET_PDEATHSIG, SIGHUP);
  if (getppid() != plan->agent_pid) _exit(1);
  const int fds[] = {plan->stdin_fd, plan->output_fd, plan->output_fd, plan->report_fd,
                     plan->executable_fd};
  if (place_descriptors(fds, 5) != 0) _exit(1);
  int exec_error[2];
  if (pipe2(exec_error, O_CLOEXEC) != 0) _exit(1);

  pid_t child = fork();
  if (child == 0) run_executable(plan, exec_error[1]);
  /* Stdin stays open here, so the worker's writes never meet a pipe without a reader. */
  close(exec_error[1]);
  close(1);
  close(2);
  close(4);
  /* A successful exec closes the pipe; a failed one sends its errno. */
  if (child < 0)
    report.exec_error = errno;
  else if (read(exec_error[0], &report.exec_error, sizeof report.exec_error) < 0)
    report.exec_error = 0;
  close(exec_error[0]);

  int reaped = child < 0;
  while (!reaped) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
      if (pid == child) {
        report.status = status;
        reaped = 1;
      }
    if (reaped) break;
    const long long left = deadline - now_ms();
    if (left <= 0) {
      report.timed_out = 1;
      kill(-child, SIGKILL); /* not reaped yet, so the group id is still its own */
      break;
    }
    if (wait_signal(left) == SIGHUP && getppid() != plan->agent_pid) {
      kill(-child, SIGKILL);
      break;
    }
  }

  /* Whatever it left behind, in its group or not, is now a child here: kill until none is. */
  pid_t killed[64];
  int killed_count = 0;
  const long long cleanup_deadline = now_ms() + EXEC_CLEANUP_MS;
  for (;;) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
      if (pid == child) report.status = status;
    if (pid < 0 && errno == ECHILD) break; /* no child left, so no descendant either */
    report.leftovers += kill_children(child, killed, &killed_count, 64);
    const long long left = cleanup_deadline - now_ms();
    if (left <= 0) {
      report.cleanup_incomplete = 1;
      break;
    }
    wait_signal(left < 20 ? left : 20);
  }
  if (write(3, &report, sizeof report) < 0) _exit(1);
  _exit(0);
}

/* ---- The worker's side. ---- */

/* Environment entries built before forking: nothing after fork may allocate. */
static void env_entry(char* buffer, size_t size, const char* name, const char* value) {
  print_to(buffer, size, "%s=%s", name, value ? value : "");
}

static void close_fd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Opens the action's executable without following a link and checks it, and exec.d, on their
 * descriptors; -1 (with a message for the response and a log line with the fix) when it must not
 * run. */
static int open_executable(const exec_state* s, pa_call* call, const pa_request* request,
                           char* message, size_t message_size) {
  char path[PATH_MAX + EXEC_NAME_MAX + 2], why[160], fix[2 * PATH_MAX + 80];
  const char* what = "its executable";
  struct stat st;
  int fd = -1;
  print_to(path, sizeof path, "%s/%s", s->dir, request->action);
  if (fstat(s->dir_fd, &st) == 0 &&
      ownership_problem(&st, s->dir, why, sizeof why, fix, sizeof fix)) {
    what = "exec.d"; /* loosened since start */
    print_to(path, sizeof path, "%s", s->dir);
  } else if ((fd = openat(s->dir_fd, request->action,
                          O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0) {
    const int error = errno;
    print_to(why, sizeof why, "%s",
             error == ELOOP    ? "is a symbolic link"
             : error == ENOENT ? "is gone"
                               : strerror(error));
    print_to(fix, sizeof fix, "%s",
             error == ELOOP ? "replace it with the file it points to (exec runs only regular "
                              "files)"
                            : "restart the agent after changing exec.d");
  } else if (fstat(fd, &st) != 0) {
    print_to(why, sizeof why, "cannot be checked: %s", strerror(errno));
    print_to(fix, sizeof fix, "ls -l %s", path);
  } else if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IXUSR)) {
    print_to(why, sizeof why, "is not an executable file");
    print_to(fix, sizeof fix, "chmod 755 %s", path);
  } else if (!ownership_problem(&st, path, why, sizeof why, fix, sizeof fix)) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
  }
  if (fd >= 0) close(fd);
  print_to(message, message_size, "%s not run: %s %s", request->action, what, why);
  char line[4 * PATH_MAX];
  print_to(line, sizeof line, "%s %s; fix: %s", path, why, fix);
  s->host->log(s->host->handle, call, PA_LOG_ERROR, line);
  return -1;
}

/* Reads up to `reads` chunks of what is waiting on the (non-blocking) output pipe, keeping the
 * first EXEC_OUTPUT_MAX bytes; closes it at its end. */
static void collect_output(int* fd, char* output, size_t* length, int reads) {
  for (int i = 0; i < reads && *fd >= 0; ++i) {
    char chunk[512];
    ssize_t got = read(*fd, chunk, sizeof chunk);
    if (got == 0) close_fd(fd); /* every writer gone; poll ignores a negative descriptor */
    if (got <= 0) return;
    size_t keep = (size_t)got < EXEC_OUTPUT_MAX - *length ? (size_t)got : EXEC_OUTPUT_MAX - *length;
    memcpy(output + *length, chunk, keep);
    *length += keep;
  }
}

/* A script that exits without reading all of its stdin makes the write fail with EPIPE, and
 * raise SIGPIPE, whose default action would end the host: the signal is blocked for this
 * thread around the write and a pending one taken back, so no host has to ignore it. */
static ssize_t write_without_sigpipe(int fd, const char* data, size_t size) {
  sigset_t pipe_signal, previous;
  sigemptyset(&pipe_signal);
  sigaddset(&pipe_signal, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_signal, &previous);
  const ssize_t written = write(fd, data, size);
  const int error = errno;
  if (written < 0 && error == EPIPE) {
    const struct timespec no_wait = {0, 0};
    while (sigtimedwait(&pipe_signal, NULL, &no_wait) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  errno = error;
  return written;
}

static int exec_handle(void* state, pa_call* call, const pa_request* request) {
  const exec_state* s = (const exec_state*)state;
  const pa_host* host = s->host;
  char message[EXEC_OUTPUT_MAX + PATH_MAX + 256];
  char path[PATH_MAX + EXEC_NAME_MAX + 2];
  print_to(path, sizeof path, "%s/%s", s->dir, request->action);

  int executable = open_executable(s, call, request, message, sizeof message);
  if (executable < 0) {
    host->set_error(host->handle, call, "plugin_failed", message);
    return PA_ERR_FAILED;
  }
  char magic[2] = {0, 0};
  const int is_script = pread(executable, magic, 2, 0) == 2 && magic[0] == '#' && magic[1] == '!';

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

  int in[2] = {-1, -1}, out[2] = {-1, -1}, report_pipe[2] = {-1, -1};
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 ||
      pipe2(report_pipe, O_CLOEXEC) != 0) {
    print_to(message, sizeof message, "cannot run %s: %s", request->action, strerror(errno));
    close_fd(&in[0]);
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&out[1]);
    close_fd(&executable);
    host->set_error(host->handle, call, "plugin_failed", message);
    return PA_ERR_FAILED;
  }
  const run_plan plan = {in[0],     out[1], report_pipe[1], executable,
                         is_script, argv,   envp,           (long long)s->timeout_seconds * 1000,
                         getpid()};
  /* Forked with every signal blocked, so no agent handler runs in the child before it has reset
   * them; the supervisor keeps them blocked and takes SIGCHLD with sigtimedwait. */
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  pid_t supervisor = fork();
  if (supervisor == 0) supervise(&plan);
  const int fork_error = errno;
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  close_fd(&in[0]);
  close_fd(&out[1]);
  close_fd(&report_pipe[1]);
  close_fd(&executable);
  if (supervisor < 0) {
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&report_pipe[0]);
    print_to(message, sizeof message, "cannot run %s: %s", request->action, strerror(fork_error));
    host->set_error(host->handle, call, "plugin_failed", message);
    return PA_ERR_FAILED;
  }

  /* Feed stdin and collect output together, so neither side can block the other, until the
   * supervisor reports: the end of the output may never come (a background child can hold it). */
  const char* input = request->json;
  size_t input_left = strlen(input);
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  if (input_left == 0) close_fd(&in[1]);
  char output[EXEC_OUTPUT_MAX + 1];
  size_t output_length = 0;
  run_report report;
  int reported = 0;
  const long long give_up =
      now_ms() + (long long)s->timeout_seconds * 1000 + EXEC_CLEANUP_MS + EXEC_REPORT_GRACE_MS;
  for (int done = 0; !done;) {
    const long long left = give_up - now_ms();
    if (left <= 0) break;
    struct pollfd fds[3] = {{report_pipe[0], POLLIN, 0}, {out[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
    if (poll(fds, 3, (int)(left > 1000 ? 1000 : left)) < 0 && errno != EINTR) break;
    if (in[1] >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t written = write_without_sigpipe(in[1], input, input_left);
      if (written > 0) {
        input += written;
        input_left -= (size_t)written;
      }
      if (input_left == 0 || (written < 0 && errno != EAGAIN)) close_fd(&in[1]);
    }
    /* Output is read before the report, so all that was written before the exit is kept. */
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR))
      collect_output(&out[0], output, &output_length, 1);
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      reported = read(report_pipe[0], &report, sizeof report) == (ssize_t)sizeof report;
      done = 1;
    }
  }
  /* What is left in the pipe; bounded, in case something that would not die still writes. */
  collect_output(&out[0], output, &output_length, 128);
  close_fd(&in[1]);
  close_fd(&out[0]);
  close_fd(&report_pipe[0]);
  output[output_length] = '\0';
  if (!reported) kill(supervisor, SIGKILL);
  while (waitpid(supervisor, NULL, 0) < 0 && errno == EINTR) {
  }

  if (output_length > 0) {
    print_to(message, sizeof message, "%s said: %s", request->action, output);
    host->log(host->handle, call, PA_LOG_INFO, message);
  }
  if (!reported) {
    print_to(message, sizeof message, "%s: its supervisor did not report and was killed",
             request->action);
    host->log(host->handle, call, PA_LOG_ERROR, message);
    host->set_error(host->handle, call, "plugin_failed", message);
    return PA_ERR_FAILED;
  }
  if (report.leftovers > 0 && !report.timed_out) { /* at the time limit, all of it is killed */
    print_to(message, sizeof message, "%s left %d process%s running; %s killed", request->action,
             report.leftovers, report.leftovers == 1 ? "" : "es",
             report.leftovers == 1 ? "it was" : "they were");
    host->log(host->handle, call, PA_LOG_WARNING, message);
  }
  if (report.cleanup_incomplete) {
    print_to(message, sizeof message, "%s left processes that did not die within %d ms",
             request->action, EXEC_CLEANUP_MS);
    host->log(host->handle, call, PA_LOG_ERROR, message);
  }
  if (report.exec_error) {
    print_to(message, sizeof message, "cannot run %s: %s", request->action,
             strerror(report.exec_error));
    host->set_error(host->handle, call, "plugin_failed", message);
    return PA_ERR_FAILED;
  }
  if (report.timed_out) {
    print_to(message, sizeof message, "%s did not finish within %d s and was killed",
             request->action, s->timeout_seconds);
    host->set_error(host->handle, call, "plugin_failed", message);
    host->log(host->handle, call, PA_LOG_WARNING, message);
    return PA_ERR_FAILED;
  }
  const int status = report.status;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return PA_OK;
  if (WIFEXITED(status))
    print_to(message, sizeof message, "%s exited with status %d", request->action,
             WEXITSTATUS(status));
  else
    print_to(message, sizeof message, "%s was killed by signal %d", request->action,
             WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  host->set_error(host->handle, call, "plugin_failed", message);
  return PA_ERR_FAILED;
}

static const pa_option exec_timeout = {
    sizeof(pa_option),
    "TIMEOUT",
    PA_OPTION_INT,
    "30",
    1,
    3600,
    NULL,
    "seconds an exec action may run before it and everything it started are killed",
    {0}};
static const pa_option exec_dir_option = {
    sizeof(pa_option),
    "DIR",
    PA_OPTION_PATH,
    NULL,
    0,
    0,
    NULL,
    "the folder whose executables serve actions (default: exec.d in the plugin folder)",
    {0}};
static const pa_option* const exec_options[] = {&exec_timeout, &exec_dir_option, NULL};

static const pa_plugin exec_plugin = {sizeof(pa_plugin),
                                      PA_PLUGIN_ABI_VERSION,
                                      "exec",
                                      "1.1.0",
                                      "maps custom actions to executables in exec.d",
                                      NULL, /* one action per executable, registered in init */
                                      exec_options,
                                      exec_init,
                                      exec_handle,
                                      exec_shutdown,
                                      {0}};

PA_PLUGIN_DEFINE(exec_plugin)
