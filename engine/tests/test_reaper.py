"""The reaper's pass over marked processes, without Ray: what carries this engine's mark dies, the rest lives."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
from breadboard_engine.procs import marked, start_time  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")

MARK = "BREADBOARD_ENGINE_MARK"

# Stands for the engine: carries the mark, starts the reaper, closes its pipe when told (as at the engine's death),
# and outlives the reaper's pass, so the test can see it spared.
ENGINE = """
import subprocess, sys
reaper = subprocess.Popen([sys.executable, "-m", "breadboard_engine.reaper"], stdin=subprocess.PIPE)
print(reaper.pid, flush=True)
sys.stdin.readline()
reaper.stdin.close()
print(reaper.wait(), flush=True)
sys.stdin.readline()
"""


def _alive(pid: int, start: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and start_time(pid) == start


def _spawn(argv, mark, **kw):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop(MARK, None)
    if mark is not None:
        env[MARK] = mark
    return subprocess.Popen(argv, env=env, **kw)


def test_the_reaper_ends_what_carries_its_mark_and_spares_its_engine_and_other_marks():
    ours = f"11111111-aaaa-4aaa-8aaa-{os.getpid():012d} /home/ours"
    other = f"22222222-bbbb-4bbb-8bbb-{os.getpid():012d} /home/theirs"
    procs = []
    try:
        victims = [_spawn(["sleep", "60"], ours) for _ in range(2)]
        spared = [_spawn(["sleep", "60"], other), _spawn(["sleep", "60"], None)]
        engine = _spawn([sys.executable, "-c", ENGINE], ours, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs = [*victims, *spared, engine]
        reaper = int(engine.stdout.readline())
        found = {pid for pid, _ in marked(MARK, ours)}
        assert {v.pid for v in victims} | {engine.pid, reaper} <= found
        assert not {s.pid for s in spared} & found
        starts = {p.pid: start_time(p.pid) for p in procs}

        engine.stdin.write("die\n")
        engine.stdin.flush()
        assert engine.stdout.readline().strip() == "0"
        for v in victims:
            wait_until(lambda v=v: v.poll() is not None, 10, what=f"marked process {v.pid} to end")
        for p in [*spared, engine]:
            assert _alive(p.pid, starts[p.pid]), f"{p.args} was spared"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_marked_pairs_name_the_process_whose_environment_was_read():
    mark = f"33333333-cccc-4ccc-8ccc-{os.getpid():012d} /home/x"
    p = _spawn(["sleep", "60"], mark)
    try:
        wait_until(lambda: marked(MARK, mark), 10, what="the marked process")
        assert marked(MARK, mark) == [(p.pid, start_time(p.pid))]
    finally:
        p.kill()
        p.wait()
    assert marked(MARK, mark) == []
