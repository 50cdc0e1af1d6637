"""The judge under load: 2,000 programs (passing, failing and hostile) through `judge_many` on
2 workers, with one sandbox server killed mid-run. Prints programs/s, the judge's peak memory
(this process plus its sandbox servers) after 200 and after 2,000 programs, and the processes left
behind; asserts every verdict is right (the killed server's job is redone, not lost), memory
does not grow with the number of programs, and nothing is left running.
"""

import os
import signal
import threading
import time

import pytest

from judge import judge_many, load_dataset
from judge.sandbox import _POOL, isolation_level

PROGRAMS = int(os.environ.get("FORKCODE_BENCH_PROGRAMS", 2000))  # fewer for a quick check
WORKERS = 2
TIMEOUT = 1.0
# Hostile bodies (each replaces a solution's body); the judge must contain them and say "not pass".
HOSTILE = [
    "    while True:\n        pass\n",
    "    x = bytearray(1 << 34)\n",
    "    import os\n    while True:\n        os.fork()\n",
    "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n",
    "    import sys\n    sys.setrecursionlimit(10**6)\n    def f(n): return f(n + 1)\n    f(0)\n",
    "    import os\n    os._exit(0)\n",
]

pytestmark = pytest.mark.skipif(isolation_level() != "namespaces", reason="the load bench runs hostile code: needs namespaces")


def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def judge_memory_kb():
    """Peak resident memory (VmHWM) of this process plus its sandbox servers (the forked sandboxes come
    and go with each job)."""
    return _rss_kb(os.getpid()) + sum(_rss_kb(s.proc.pid) for s in list(_POOL.servers))


def leftover_processes(servers):
    """What this run left: its sandbox servers (each leads its own session) or any process still in
    one of their sessions (their sandboxes). Other jobs' judges on the machine do not count."""
    left = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            if pid in servers or os.getsid(pid) in servers:
                left.append(pid)
        except OSError:
            continue
    return left


def batch():
    problems = load_dataset("humaneval")
    items = []
    for i in range(PROGRAMS):
        p = problems[i % len(problems)]
        kind = ("pass", "fail", "pass", "fail", "pass", "fail", "pass", "fail", "pass", "hostile")[i % 10]
        body = {"pass": p.references[0][len(p.starter_code):], "fail": "    return None\n",
                "hostile": HOSTILE[(i // 10) % len(HOSTILE)]}[kind]
        items.append((p.starter_code + body, p, kind))
    return items


def test_judge_many_under_load(benchmark, timed):
    items = batch()
    memory, done, killed, servers = {}, [0], [], set()
    lock = threading.Lock()

    def progress(_verdict):
        with lock:
            done[0] += 1
            n = done[0]
            servers.update(s.proc.pid for s in list(_POOL.servers))
        if n in (200, PROGRAMS):
            memory[n] = judge_memory_kb()
        if n == PROGRAMS // 2 and _POOL.servers:  # kill a server (and its sandbox) mid-run
            server = _POOL.servers[0]
            killed.append(server.proc.pid)
            os.killpg(server.proc.pid, signal.SIGKILL)

    verdicts, seconds = timed(lambda: judge_many([(prog, p) for prog, p, _ in items], workers=WORKERS, timeout=TIMEOUT,
                                                 progress=progress))
    wrong = [(kind, v.verdict, v.error[:80]) for (_, _, kind), v in zip(items, verdicts)
             if (kind == "pass") != (v.verdict == "pass")]
    lost = [v for v in verdicts if "sandbox error" in v.error]
    _POOL.close()
    time.sleep(0.5)
    left = leftover_processes(servers)
    print(f"\n{PROGRAMS} programs (40% failing, 10% hostile), {WORKERS} workers, timeout {TIMEOUT:g} s")
    print(f"  {PROGRAMS / seconds:.1f} programs/s ({seconds:.0f} s); server {killed} killed after {PROGRAMS // 2}")
    print(f"  judge peak memory (this process + sandbox servers): {memory.get(200, 0) / 1024:.0f} MiB after 200 programs, "
          f"{memory.get(PROGRAMS, 0) / 1024:.0f} MiB after {PROGRAMS}")
    print(f"  wrong verdicts {len(wrong)}, lost to the sandbox {len(lost)}, processes left behind {len(left)}")
    benchmark.extra_info.update({"programs_per_s": PROGRAMS / seconds, "rss_mib_200": memory.get(200, 0) / 1024,
                                 "rss_mib_2000": memory.get(PROGRAMS, 0) / 1024, "leftover": len(left)})
    assert killed and not wrong and not lost and not left, (wrong[:5], lost[:2], left)
    assert memory[PROGRAMS] < memory[200] * 1.25 + 20 * 1024  # no growth with the number of programs
