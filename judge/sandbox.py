"""Host side of the sandbox: start `_runner.py` in a child process with a job, collect raw results.

Isolation levels, strongest first (`FORKCODE_SANDBOX` forces one; a forced level that cannot be set
up is an error, never a silent downgrade):
- "namespaces": fresh pid, mount, network, ipc and uts namespaces; a read-only minimal root (system
  libraries and the interpreter only), private tmpfs work dirs, no network, its own unprivileged uid,
  resource limits. Needs root, or unprivileged user namespaces.
- "rlimits": a child process with its own session, resource limits and, when the judge runs as
  root, its own unprivileged uid. No filesystem or network isolation.
"""

import atexit
import functools
import json
import os
import queue
import select
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import asdict, dataclass

from common.cli import ForkcodeError

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_runner.py")
LEVELS = ("namespaces", "rlimits")
# Sandbox uids are UID_BASE + the launcher's pid: far above any real account.
UID_BASE = 1_500_000_000
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/sandbox",
             "TMPDIR": "/tmp", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}

# Seconds each test may run, the default of every command that judges.
JUDGE_TIMEOUT = 4.0


class SandboxError(ForkcodeError, RuntimeError):
    """The sandbox itself failed (not the program under test)."""


@dataclass
class Limits:
    memory_mb: int = 1024          # address space of the program
    output_bytes: int = 16 << 20   # stdout cap, also the largest file it may write
    processes: int = 32            # processes and threads of the program's own uid
    open_files: int = 128
    workdir_mb: int = 64           # each of the tmpfs work dirs (/sandbox, /tmp, /dev/shm)


def _python_dirs():
    """Directories the interpreter needs inside the sandbox: its prefix(es), read-only."""
    dirs = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    exe = os.path.realpath(sys.executable)
    if not any(exe.startswith(d + os.sep) for d in dirs):
        dirs.add(os.path.dirname(exe))
    return sorted(dirs)


def _sandbox_sys_path():
    """stdlib, lib-dynload and site-packages, without the caller's cwd or editable-install paths."""
    paths = sysconfig.get_paths()
    # In a venv, platstdlib names the venv's lib dir: the stdlib's C modules (lib-dynload) live
    # under the base interpreter's.
    base = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    wanted = [base["stdlib"], base["platstdlib"], os.path.join(base["platstdlib"], "lib-dynload"),
              paths["purelib"], paths["platlib"]]
    wanted += [p for p in sys.path if p.endswith(".zip")]
    seen = []
    for p in wanted:
        p = os.path.realpath(p)
        if p not in seen:
            seen.append(p)
    return seen


def interpreter():
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable) or sys.executable)


def make_job(code, kind, tests, *, fn_name=None, timeout=JUDGE_TIMEOUT, limits=None, isolation=None,
             apps_legacy=False, fail_fast=False):
    """A job for the runner. kind: "stdio" (tests are stdin strings), "call" (argument lists for
    `fn_name`), "assert" (code snippets run in the program's namespace)."""
    return {
        "code": code, "kind": kind, "tests": list(tests), "fn_name": fn_name,
        "timeout": float(timeout), "limits": asdict(limits or Limits()),
        "isolation": isolation or isolation_level(), "uid_base": UID_BASE,
        "python_dirs": _python_dirs(), "sys_path": _sandbox_sys_path(), "env": CLEAN_ENV,
        "prelude_stdio": apps_legacy, "apps_legacy_wrap": apps_legacy and kind == "stdio",
        "fail_fast": fail_fast, "stop_after_timeout": True,
    }


class SandboxServer:
    """One fork server (`_runner.py`): runs jobs one at a time, each in a fresh forked sandbox."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [interpreter(), "-I", "-S", "-B", "-X", "utf8", RUNNER],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=dict(CLEAN_ENV), cwd="/", close_fds=True, start_new_session=True)
        self.buffer = b""

    def run(self, job):
        """Returns (header, results): the runner's first line, then one dict per test run."""
        if self.proc.poll() is not None:
            raise SandboxError(f"sandbox server exited with {self.proc.returncode}")
        payload = json.dumps(job).encode()
        try:
            self.proc.stdin.write(b"%16d" % len(payload) + payload)
            self.proc.stdin.flush()
        except OSError as exc:  # killed between jobs: a broken pipe
            raise SandboxError(f"sandbox server is gone ({exc.strerror})") from None
        # Watchdog for the whole sandbox: every test may use its full time limit.
        deadline = time.monotonic() + 10.0 + len(job["tests"]) * (job["timeout"] + 0.5)
        launcher, lines = None, []
        while True:
            line = self._readline(deadline)
            if line is None:  # past the watchdog: kill the sandbox, keep the server
                if launcher:
                    _kill(launcher)
                deadline = time.monotonic() + 10.0
                continue
            msg = json.loads(line)
            if "launcher" in msg:
                launcher = msg["launcher"]
            elif "done" in msg:
                break
            else:
                lines.append(msg)
        if not lines or "error" in lines[0]:
            raise SandboxError(lines[0]["error"] if lines else "sandbox died before it started")
        return lines[0], lines[1:]

    def _readline(self, deadline):
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise SandboxError("sandbox server exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def close(self):
        _kill(self.proc.pid, group=True)
        self.proc.wait()


def _kill(pid, group=False):
    try:
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class SandboxPool:
    """A fixed set of servers shared by threads; a server that breaks is replaced."""

    def __init__(self, size):
        self.size = size
        self.idle = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.servers = []

    def run(self, job):
        try:
            server = self.idle.get_nowait()
        except queue.Empty:
            with self.lock:
                server = SandboxServer() if len(self.servers) < self.size else None
                if server:
                    self.servers.append(server)
            server = server or self.idle.get()
        try:
            result = server.run(job)
        except BaseException:
            with self.lock:
                self.servers.remove(server)
            server.close()
            raise
        self.idle.put(server)
        return result

    def close(self):
        with self.lock:
            for server in self.servers:
                server.close()
            self.servers.clear()


_POOL = SandboxPool(os.cpu_count() or 1)
atexit.register(_POOL.close)


def run_job(code, kind, tests, **options):
    """Run `code` against `tests` in a fresh sandbox; see make_job for the options."""
    return _POOL.run(make_job(code, kind, tests, **options))


@functools.cache
def isolation_level():
    """The strongest level that works here (probed once per process), or the one forced by env."""
    forced = os.environ.get("FORKCODE_SANDBOX")
    if forced:
        if forced not in LEVELS:
            raise SandboxError(f"FORKCODE_SANDBOX must be one of {', '.join(LEVELS)}, not {forced!r}")
        _probe(forced)
        return forced
    for level in LEVELS:
        try:
            _probe(level)
            return level
        except SandboxError:
            continue
    raise SandboxError("no sandbox level works on this machine")


def _probe(level):
    header, results = run_job("print('ok')", "stdio", [""], timeout=10, isolation=level)
    if not header.get("ready") or not results or results[0]["stdout"] != "ok\n":
        raise SandboxError(f"sandbox level {level!r} does not work here: {header} {results}")
