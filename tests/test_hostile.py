"""Hostile programs: each gets the right verdict, the host survives, nothing outside the sandbox's
temp dir changes, and no process is left behind.

Destructive programs only ever aim at canary files this test creates, so a broken sandbox fails
these tests instead of damaging the machine.
"""

import os
import socket
import textwrap
import threading
import time
import uuid

import pytest

from judge import Limits, Problem, isolation_level, judge
from judge.sandbox import UID_BASE

TOKEN = uuid.uuid4().hex
SECRET_MARK = "HOSTSECRET"  # a judge-side secret the programs look for
os.environ["FORKCODE_TEST_SECRET"] = f"{SECRET_MARK}-{TOKEN}"
TIMEOUT = 2.0
LIMITS = Limits(memory_mb=256)  # filling 1 GiB takes seconds on a small VM

pytestmark = pytest.mark.skipif(isolation_level() != "namespaces",
                                reason="the hostile suite needs namespace isolation (root or user namespaces)")


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """Files a hostile program would like to change: root-owned, world-writable, in host /tmp."""
    d = tmp_path_factory.mktemp("canary")
    os.chmod(d, 0o777)
    (d / "keep.txt").write_text("original\n")
    os.chmod(d / "keep.txt", 0o666)
    return d


@pytest.fixture(scope="module")
def listener():
    """A loopback TCP listener on the host that must never see a connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted = []

    def loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(conn)
            except OSError:
                pass
    stop = threading.Event()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join()
    srv.close()


def sandbox_processes():
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if UID_BASE <= uid < UID_BASE + (1 << 23):
            found.append(int(pid))
    return found


def snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


ECHO = Problem(id="echo", question="print the input", kind="stdio", inputs=["hello\n"], outputs=["hello\n"])

# (name, program, expected verdict or verdicts). {canary}, {port}, {token} are filled in per run.
CASES = [
    ("fork_bomb", "import os\nwhile True:\n    os.fork()\n", "runtime_error"),
    ("fork_bomb_persistent", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", "timeout"),
    ("thread_bomb", "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,)).start()\n", "timeout"),
    ("memory_bomb_single", "x = bytearray(10 ** 11)\n", "memory_limit"),
    ("memory_bomb_growing", "a = []\nwhile True:\n    a.append(bytearray(10 ** 7))\n", "memory_limit"),
    ("huge_stdout", "while True:\n    print('x' * 10000)\n", "output_limit"),
    ("huge_stderr", "import sys\nwhile True:\n    sys.stderr.write('e' * 10000)\n", "output_limit"),
    ("huge_file_in_workdir", "with open('big', 'wb') as f:\n    while True:\n        f.write(b'0' * 1000000)\n", "output_limit"),
    ("fill_dev_shm", "with open('/dev/shm/x', 'wb') as f:\n    for _ in range(1000):\n        f.write(b'0' * (1 << 20))\n", "output_limit"),
    ("infinite_loop", "while True:\n    pass\n", "timeout"),
    ("sleep", "import time\ntime.sleep(1000)\n", "timeout"),
    ("blocking_read_forever", "import os\nr, w = os.pipe()\nos.read(r, 1)\n", "timeout"),
    ("signal_ignoring_loop", "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU, signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass\n", "timeout"),
    ("stop_self", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\nprint(input())\n", "timeout"),
    ("atexit_hang", "import atexit, time\natexit.register(time.sleep, 1000)\nprint(input())\n", "timeout"),
    ("daemon_double_fork", "import os, time\nprint(input(), flush=True)\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1000)\n    os._exit(0)\n", "pass"),
    ("daemon_ignoring_signals", "import os, signal, time\nprint(input(), flush=True)\nif os.fork() == 0:\n    os.setsid()\n    for s in (signal.SIGTERM, signal.SIGHUP):\n        signal.signal(s, signal.SIG_IGN)\n    while True:\n        pass\n", "pass"),
    ("spinning_children", "import os\nfor _ in range(4):\n    if os.fork() == 0:\n        while True:\n            pass\nprint(input())\n", "pass"),
    ("recursion_segfault", "import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(n):\n    return list(map(f, [n + 1]))\nf(0)\n",
     ("runtime_error", "memory_limit")),  # C stack overflow (SIGSEGV) or the address-space cap first,
    ("recursion_error", "def f():\n    return f()\nf()\n", "runtime_error"),
    ("fd_exhaustion", "fs = [open('/dev/null') for _ in range(10 ** 6)]\n", "runtime_error"),
    ("write_canary", "open('{canary}/pwned', 'w').write('x')\n", "runtime_error"),
    ("overwrite_canary", "open('{canary}/keep.txt', 'w').write('pwned')\n", "runtime_error"),
    ("delete_canary", "import os\nos.remove('{canary}/keep.txt')\n", "runtime_error"),
    ("rmtree_canary", "import shutil\nshutil.rmtree('{canary}')\n", "runtime_error"),
    ("write_etc", "open('/etc/forkcode-pwned-{token}', 'w').write('x')\n", "runtime_error"),
    ("write_usr", "open('/usr/forkcode-pwned-{token}', 'w').write('x')\n", "runtime_error"),
    ("write_host_tmp_via_shell", "import os\nos.system('echo x > /tmp/forkcode-pwned-{token}')\nprint(input())\n", "pass"),
    ("subprocess_rm_canary", "import subprocess\nr = subprocess.run(['rm', '-rf', '{canary}'])\nprint(input())\n", "pass"),
    ("os_system_touch_repo", "import os\nos.system('touch {repo}/forkcode-pwned-{token}')\nprint(input())\n", "pass"),
    ("read_judge_source", "print(open('{repo}/judge/core.py').read()[:10])\n", "runtime_error"),
    ("read_shadow", "print(open('/etc/shadow').read())\n", "runtime_error"),
    ("read_judge_environ", "import os\nprint(os.environ.get('FORKCODE_TEST_SECRET', input()))\n", "pass"),
    ("read_pid1_environ", "print(open('/proc/1/environ').read())\n", "runtime_error"),
    ("scan_for_secrets", textwrap.dedent("""\
        import os, sys
        mark = '{mark}'.lower().upper()  # built at run time: the source itself must not match
        hits = []
        # System and interpreter dirs are the host's public files (and can be gigabytes: a venv's
        # site-packages is on sys.path).
        skip = ('/proc', '/usr', '/lib', sys.prefix, sys.base_prefix, *filter(None, sys.path))
        for root, dirs, files in os.walk('/'):
            if root.startswith(skip):
                dirs[:] = []
            for f in files:
                try:
                    if mark.encode() in open(os.path.join(root, f), 'rb').read(1 << 20) and f != 'solution.py':
                        hits.append(f)
                except OSError:
                    pass
        for pid in os.listdir('/proc'):
            for name in ('environ', 'cmdline'):
                try:
                    if mark.encode() in open(f'/proc/{{pid}}/{{name}}', 'rb').read():
                        hits.append(pid)
                except OSError:
                    pass
        print(input() if not hits else hits)
        """), "pass"),
    ("see_host_processes", "import os\nn = len([p for p in os.listdir('/proc') if p.isdigit()])\nprint(input() if n <= 3 else n)\n", "pass"),
    ("network_loopback", "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n", "runtime_error"),
    ("network_outside", "import socket\nsocket.create_connection(('10.0.0.1', 80), timeout=0.5)\n", "runtime_error"),
    ("kill_parent", "import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n    pass\nprint(input())\n", "pass"),
    ("kill_pid1", "import os, signal\ntry:\n    os.kill(1, signal.SIGKILL)\nexcept OSError:\n    pass\nprint(input())\n", "pass"),
    ("kill_everything", "import os, signal\nos.kill(-1, signal.SIGKILL)\n", "runtime_error"),
    ("kill_own_group", "import os, signal\nos.killpg(0, signal.SIGKILL)\n", "runtime_error"),
    ("ctypes_setuid_root", "import ctypes\nr = ctypes.CDLL(None).setuid(0)\nprint(input() if r != 0 else 'root!')\n", "pass"),
    ("ctypes_unshare_mount", "import ctypes\nlibc = ctypes.CDLL(None)\nr = libc.unshare(0x00020000) == 0 or libc.mount(b'none', b'/usr', b'tmpfs', 0, None) == 0\nprint(input() if not r else 'escaped')\n", "pass"),
    ("ctypes_ptrace_pid1", "import ctypes\nr = ctypes.CDLL(None).ptrace(16, 1, 0, 0)\nprint(input() if r != 0 else 'attached')\n", "pass"),
    ("inherited_fds", "import os\nopen_fds = [fd for fd in range(4, 1024) if os.path.exists(f'/proc/self/fd/{{fd}}')]\nprint(input() if not open_fds else open_fds)\n", "pass"),
    ("binary_garbage_output", "import os, sys\nsys.stdout.buffer.write(os.urandom(4096))\n", "wrong_answer"),
]


@pytest.mark.parametrize("name,program,expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_program(name, program, expected, canary, listener, tmp_path):
    port, accepted = listener
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    before = snapshot(canary)
    code = program.format(canary=canary, port=port, token=TOKEN, repo=repo, mark=SECRET_MARK)
    verdict = judge(code, ECHO, timeout=TIMEOUT, limits=LIMITS)
    assert verdict.verdict in ((expected,) if isinstance(expected, str) else expected), (verdict.verdict, verdict.error)
    assert verdict.isolation == "namespaces"
    # Nothing outside the sandbox changed.
    assert snapshot(canary) == before
    for path in (f"/tmp/forkcode-pwned-{TOKEN}", f"{repo}/forkcode-pwned-{TOKEN}",
                 f"/etc/forkcode-pwned-{TOKEN}", f"/usr/forkcode-pwned-{TOKEN}"):
        assert not os.path.exists(path)
    assert accepted == []
    # No process is left behind (the kernel may take a moment to finish reaping).
    deadline = time.monotonic() + 3
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes() == []


def test_host_survives_and_still_judges():
    """After the whole hostile suite in this process, a normal program still gets judged right."""
    good = judge("print(input())", ECHO)
    assert good.verdict == "pass" and good.passed == 1
    assert len(CASES) >= 30
