// TensorFlow's C++ logging writes straight to file descriptor 2, past Node's process.stderr, so the only way to keep
// its load-time notices off the user's terminal is to point fd 2 elsewhere while `require` runs:
//   const saved = redirect(fd);  ...load...;  restore(saved);
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static napi_value ThrowErrno(napi_env env, const char* what) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(errno));
  napi_throw_error(env, nullptr, message);
  return nullptr;
}

static bool FdArgument(napi_env env, napi_callback_info info, int32_t* fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok) {
    napi_throw_type_error(env, nullptr, "expected a file descriptor (integer)");
    return false;
  }
  return true;
}

// redirect(fd) -> savedFd: keep a copy of the current stderr, then make fd 2 refer to `fd`.
static napi_value Redirect(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!FdArgument(env, info, &fd)) return nullptr;
  fflush(stderr);
  int saved = fcntl(2, F_DUPFD_CLOEXEC, 3);  // close-on-exec: child processes must not inherit the copy
  if (saved < 0) return ThrowErrno(env, "redirect: dup(2)");
  if (dup2(fd, 2) < 0) {
    int err = errno;
    close(saved);
    errno = err;
    return ThrowErrno(env, "redirect: dup2");
  }
  napi_value result;
  napi_create_int32(env, saved, &result);
  return result;
}

// restore(savedFd): point fd 2 back at the saved stderr and release the copy.
static napi_value Restore(napi_env env, napi_callback_info info) {
  int32_t saved;
  if (!FdArgument(env, info, &saved)) return nullptr;
  fflush(stderr);
  if (dup2(saved, 2) < 0) return ThrowErrno(env, "restore: dup2");
  close(saved);
  return nullptr;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "redirect", NAPI_AUTO_LENGTH, Redirect, nullptr, &fn);
  napi_set_named_property(env, exports, "redirect", fn);
  napi_create_function(env, "restore", NAPI_AUTO_LENGTH, Restore, nullptr, &fn);
  napi_set_named_property(env, exports, "restore", fn);
  return exports;
}
