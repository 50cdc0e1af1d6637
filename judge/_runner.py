"""The sandbox side of the judge: isolates itself, then runs one program against its tests.

Started by `judge.sandbox` as `python -I -S -X utf8 _runner.py` with one JSON job on stdin; writes
one JSON line per test on stdout. Stdlib only, and it never imports the judge: nothing of the host
but the interpreter and system libraries is mounted inside.

Process layout with isolation "namespaces" (the host is root, or has unprivileged user namespaces):

    judge (host)  ->  launcher (this file)  ->  pid 1 of fresh pid/mount/net/ipc/uts namespaces
                                                 = the runner, unprivileged after set-up
                                                   -> one forked child per test, the program

When pid 1 of a pid namespace exits, the kernel kills every process left in it, so daemons,
setsid() children and fork bombs die with the runner; the runner also dies with the launcher
(PDEATHSIG), and the judge kills the launcher on its wall-clock watchdog.
Expected outputs never enter the sandbox: results go back raw and the host compares them.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
import traceback
import types

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}

# Names APPS solutions assume without importing them (LeetCode starters use `List[int]`); the
# hendrycks harness prepends the same kind of header. Injected as globals, so line numbers hold.
PRELUDE = """\
import sys, time, itertools, collections, math, fractions, random, heapq, bisect, string, re, functools, operator
from itertools import accumulate, product, permutations, combinations
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache, reduce
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2, inf
from heapq import heappush, heappop, heapify
from typing import List, Tuple, Dict, Set, Optional, Any
"""

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    _check(libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


# --- isolation set-up -------------------------------------------------------------------------

def enter_namespaces():
    """Unshare, fork pid 1 of the new pid namespace and return in it; the launcher waits and exits."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if os.geteuid() != 0:  # an ordinary user gets mount rights only inside a user namespace of its own
        outer_uid, outer_gid = os.geteuid(), os.getegid()
        _check(libc.unshare(flags | CLONE_NEWUSER), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {outer_uid} 1"), ("gid_map", f"0 {outer_gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    else:
        _check(libc.unshare(flags), "unshare")
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    libc.sethostname(b"sandbox", 7)


def build_root(job, uid):
    """A new root: read-only system dirs and interpreter, a private /proc, tmpfs work dirs."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    binds = []  # (host path, path inside, is_dir)
    for d in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(d):
            continue  # merged-/usr symlinks are recreated below
        if os.path.isdir(d):
            binds.append((d, d, True))
    for d in job["python_dirs"]:
        binds.append((d, d, True))
    for f in ("/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/zero", "/dev/full",
              "/dev/random", "/dev/urandom"):
        if os.path.exists(f):
            binds.append((os.path.realpath(f), f, False))
    # Hold each source open first: the new root is a tmpfs on /tmp, which may hide some of them.
    fds = [os.open(src, os.O_PATH | os.O_CLOEXEC) for src, _, _ in binds]
    new = "/tmp"
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for (_src, dst, is_dir), fd in zip(binds, fds):
        target = new + dst
        if is_dir:
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))  # a mount point for the file
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        nodev = 0 if dst.startswith("/dev/") else MS_NODEV
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | nodev)
        os.close(fd)
    for d in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        if os.path.islink(d):
            os.symlink(os.readlink(d), new + d)
    os.makedirs(new + "/proc")
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    work_mb = job["limits"]["workdir_mb"]
    sandbox_owner = 0 if job["rootless"] else uid  # rootless: only our own uid (root inside) is mapped
    for d, mode, owner in (("/sandbox", "0700", sandbox_owner), ("/tmp", "1777", 0), ("/dev/shm", "1777", 0)):
        os.makedirs(new + d, exist_ok=True)
        _mount("tmpfs", new + d, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={work_mb}m,mode={mode},uid={owner},gid={owner}")
    os.makedirs(new + "/.old")
    _check(libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], new.encode(), (new + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def drop_privileges(uid, rootless, namespaces):
    """In each test child, just before the program runs."""
    if rootless:
        if namespaces:
            # Only the judge's own uid is mapped, as root of the sandbox's user namespace: a nested
            # one maps it to the sandbox uid, so the program is nobody's root (setuid(0) fails).
            _check(libc.unshare(CLONE_NEWUSER), "unshare")
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} 0 1"), ("gid_map", f"{uid} 0 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        # A new user namespace grants every capability in it: drop them all.
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        data = (ctypes.c_uint32 * 6)()
        hdr = Header(0x20080522, 0)
        _check(libc.syscall(SYS_CAPSET[os.uname().machine], ctypes.byref(hdr), data), "capset")
    else:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def sandbox_python_path(job):
    sys.path[:] = [p for p in job["sys_path"] if os.path.isdir(p)]


# --- running one test -----------------------------------------------------------------------

def _memfd(name, data=b""):
    fd = os.memfd_create(name, 0)
    if data:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_fd(fd, cap):
    os.lseek(fd, 0, os.SEEK_SET)
    size = os.fstat(fd).st_size
    return os.read(fd, min(size, cap)) if size else b"", size


def _set_limits(limits, timeout):
    cpu = int(timeout) + 1
    mem = limits["memory_mb"] << 20
    for res, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                       (resource.RLIMIT_AS, (mem, mem)),
                       (resource.RLIMIT_STACK, (min(mem, 256 << 20), min(mem, 256 << 20))),
                       (resource.RLIMIT_FSIZE, (limits["output_bytes"], limits["output_bytes"])),
                       (resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"])),
                       (resource.RLIMIT_NPROC, (limits["processes"], limits["processes"])),
                       (resource.RLIMIT_CORE, (0, 0))):
        resource.setrlimit(res, value)


def _restore_int_keys(value):
    """JSON turns int dict keys into strings; APPS inputs were written from Python with int keys."""
    if isinstance(value, dict) and value and all(_is_int(k) for k in value):
        return {int(k): v for k, v in value.items()}
    return value


def _is_int(text):
    try:
        int(text)
        return True
    except (TypeError, ValueError):
        return False


def _fresh_std_streams():
    # The runner's own sys.std* may hold buffered job data: the program gets new ones on fds 0-2.
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - kept open for the program
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                                       closefd=False, buffering=1)


def _exit_code(exc):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finish(code, status):
    """Mimic interpreter shutdown: join threads, run atexit handlers, flush; then report."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            code = code or 1
    try:
        os.write(3, json.dumps(status, default=repr).encode())
    except BaseException:
        pass
    os._exit(code)


def _module(name, job, prelude):
    mod = types.ModuleType(name)
    mod.__file__ = job["path"]
    mod.__builtins__ = __builtins__
    if prelude is not None:
        mod.__dict__.update({k: v for k, v in prelude.items() if not k.startswith("__")})
    sys.modules[name] = mod
    return mod


def _encode_value(value):
    def fallback(o):
        if isinstance(o, (set, frozenset)):
            return {"__set__": sorted(map(repr, o))}
        return {"__repr__": repr(o)}
    return json.loads(json.dumps(value, default=fallback))


def run_child(job, code, test, prelude):
    """In the forked child: become the program. Never returns."""
    _fresh_std_streams()
    sys.argv = [job["path"]]
    status = {"phase": "load"}
    exit_code = 0
    try:
        if job["kind"] == "stdio":
            mod = _module("__main__", job, prelude if job["prelude_stdio"] else None)
            exec(code, mod.__dict__)
        else:
            mod = _module("solution", job, prelude if job["kind"] == "call" else None)
            exec(code, mod.__dict__)
            status["phase"] = "test"
            if job["kind"] == "call":
                fn = _resolve(mod, job["fn_name"])
                args = [_restore_int_keys(a) for a in test]
                status["value"] = _encode_value(fn(*args))
            else:  # assert code runs in the program's own namespace
                exec(compile(test, "<test>", "exec"), mod.__dict__)
                status["finished"] = True  # an os._exit(0) mid-test never gets here: no silent pass
    except SystemExit as exc:
        exit_code = _exit_code(exc)
        if job["kind"] != "stdio":
            status["exc"] = "SystemExit"
    except BaseException as exc:
        status["exc"] = type(exc).__name__
        exc.__traceback__ = exc.__traceback__.tb_next  # the traceback starts in the program
        sys.excepthook(type(exc), exc, exc.__traceback__)
        exit_code = 1
    _finish(exit_code, status)


def _resolve(mod, fn_name):
    cls = getattr(mod, "Solution", None)
    if isinstance(cls, type) and hasattr(cls, fn_name):
        return getattr(cls(), fn_name)
    return getattr(mod, fn_name)


def kill_leftovers(namespaces, pgid):
    """Kill whatever the test left running (daemons, setsid children, fork bombs) and reap it."""
    for _ in range(100):
        try:
            if namespaces:
                os.kill(-1, signal.SIGKILL)  # as pid 1: everything else in the namespace
            else:
                os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.001)


def run_test(job, code, test, prelude, namespaces):
    limits, timeout = job["limits"], job["timeout"]
    stdin = test.encode() if job["kind"] == "stdio" else b""
    fds = [_memfd("stdin", stdin), _memfd("stdout"), _memfd("stderr"), _memfd("status")]
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            os.closerange(4, 1 << 16)
            # Its own process group: the sandbox server outside the pid namespace shares ours, and
            # killpg(0) would reach it where the uids match (rootless).
            os.setsid()
            if not namespaces:
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # CPython ignores it; we want the kill
            _set_limits(limits, timeout)
            drop_privileges(job["uid"], job["rootless"], namespaces)
            run_child(job, code, test, prelude)
        except BaseException:
            os.write(2, ("sandbox set-up failed: " + traceback.format_exc()).encode())
        finally:
            os._exit(111)
    timed_out = False
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    if not poller.poll(timeout * 1000):
        timed_out = True
        os.kill(pid, signal.SIGKILL)
    _, wstatus, usage = os.wait4(pid, 0)
    elapsed = time.monotonic() - start
    os.close(pidfd)
    kill_leftovers(namespaces, pid)
    out, out_size = _read_fd(fds[1], limits["output_bytes"])
    err, _ = _read_fd(fds[2], 1 << 20)
    st, _ = _read_fd(fds[3], limits["output_bytes"])
    for fd in fds:
        os.close(fd)
    try:
        status = json.loads(st) if st else None
    except ValueError:
        status = None
    return {
        "time": round(elapsed, 6),
        "cpu": round(usage.ru_utime + usage.ru_stime, 6),
        "timed_out": timed_out,
        "cpu_limit": int(timeout) + 1,
        "exit": os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else None,
        "signal": os.WTERMSIG(wstatus) if os.WIFSIGNALED(wstatus) else None,
        "stdout": out.decode("utf-8", "replace"),
        "stdout_bytes": out_size,
        "stderr": err.decode("utf-8", "replace")[-2000:],
        "status": status,
    }


def sandbox(job, out):
    """Everything for one program, in a process forked from the server for this job alone."""
    workdir = None
    try:
        workdir = serve(job, out)
    finally:
        if workdir and workdir != "/sandbox":
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)


def serve(job, out):
    namespaces = job["isolation"] == "namespaces"
    # A uid of its own per live sandbox (the launcher's pid is unique): no shared process quota,
    # and no other sandbox's processes to signal.
    job["uid"] = uid = job["uid_base"] + os.getpid()
    job["rootless"] = os.geteuid() != 0
    if namespaces:
        enter_namespaces()
        build_root(job, uid)
        workdir = "/sandbox"
    else:
        import tempfile
        workdir = tempfile.mkdtemp(prefix="forkcode-judge-")
        if not job["rootless"]:
            os.chown(workdir, uid, uid)
    os.chdir(workdir)
    path = job["path"] = os.path.join(workdir, "solution.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(job["code"])
    os.chmod(path, 0o644)
    sandbox_python_path(job)
    os.environ.clear()
    os.environ.update(job["env"])
    try:
        code = _compile(job, path)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        message = "".join(traceback.format_exception_only(type(exc), exc))[-2000:]
        out.write(json.dumps({"compile_error": message}) + "\n")
        return workdir
    out.write(json.dumps({"ready": True, "pid": os.getpid(), "hostname": os.uname().nodename}) + "\n")
    for i, test in enumerate(job["tests"]):
        result = run_test(job, code, test, PRELUDE_GLOBALS, namespaces)
        result["i"] = i
        out.write(json.dumps(result) + "\n")
        if result["timed_out"] and job["stop_after_timeout"]:
            break
        if job["fail_fast"] and (result["exit"] != 0 or result["status"] and result["status"].get("exc")):
            break
    return workdir


def _compile(job, path):
    try:
        return compile(job["code"], path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        if not (job["apps_legacy_wrap"] and "outside function" in str(exc.msg)):
            raise
    # hendrycks/apps runs every stdin program inside `def code(): ...`, so APPS references may
    # `return` at top level; apps-legacy mode allows that the same way.
    lines = job["code"].split("\n")
    imports = [x for x in lines if x.startswith(("import ", "from "))]
    body = ["\t" + x for x in lines if not x.startswith(("import ", "from "))]
    wrapped = "\n".join(imports + ["def __apps_main__():"] + body + ["__apps_main__()", ""])
    return compile(wrapped, path, "exec", dont_inherit=True)


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def server():
    """Fork server: one job (`<length>\\n<json>`) at a time on stdin, each in a fresh forked sandbox.

    Start-up and imports are paid once here; the server itself never runs untrusted code, so every
    sandbox starts from the same clean interpreter state. Per job it answers
    {"launcher": pid}, the sandbox's own lines, then {"done": exit status}.
    It exits when the judge closes its stdin (or dies). No PDEATHSIG here: it would fire when the
    judge's *thread* that started it ends, not the judge.
    """
    out = os.fdopen(1, "w", buffering=1)
    while True:
        try:
            size = int(_read_exact(0, 16))
            job = json.loads(_read_exact(0, size))
        except EOFError:
            return
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                devnull = os.open("/dev/null", os.O_RDWR)
                os.dup2(devnull, 0)
                sandbox(job, out)
            except BaseException as exc:
                out.write(json.dumps({"error": f"sandbox set-up failed: {type(exc).__name__}: {exc}"}) + "\n")
                code = 99
            out.flush()
            os._exit(code)
        out.write(json.dumps({"launcher": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"done": os.waitstatus_to_exitcode(status)}) + "\n")


import site  # noqa: E402 - `exit()`, `quit()`, `help` as in a normal run, without .pth processing

site.setquit()
site.setcopyright()
site.sethelper()
PRELUDE_GLOBALS = {}
exec(PRELUDE, PRELUDE_GLOBALS)

if __name__ == "__main__":
    server()
