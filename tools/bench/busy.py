"""``--busy N``: a busy machine. N processes, each spinning on a pure-Python loop in one thread
(one core's worth of load each), run beside the whole benchmark and are stopped after it, also
on an error or Ctrl-C.

Each process ignores Ctrl-C (the terminal sends it to the whole process group: the benchmark
stops them itself, without a traceback from each) and ends on its own within about 50 ms once
its parent is gone, so none outlives a benchmark that is killed outright.
"""
import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator, List

#: The program of one busy process: spin in Python, checking now and then that its parent (the
#: process id it is given) is still its parent.
LOOP = '''
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
'''
#: Seconds a busy process gets to end after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0


@contextmanager
def busy_processes(count: int) -> Iterator[List[subprocess.Popen]]:
    """Run ``count`` busy processes (:data:`LOOP`) for the duration of the ``with`` block.

    They are stopped (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT` s) and reaped when the
    block ends, however it ends; one that failed to start stops those started before it.

    Args:
        count (int): How many (0: none).

    Yields:
        list[subprocess.Popen]: The processes, running.
    """
    procs: List[subprocess.Popen] = []
    try:
        for _ in range(count):
            # -I: isolated mode, no site packages or environment to read
            procs.append(subprocess.Popen([sys.executable, '-I', '-c', LOOP, str(os.getpid())],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def describe(procs: List[subprocess.Popen]) -> str:
    """The header line of a run beside busy processes.

    Args:
        procs (list[subprocess.Popen]): The busy processes.

    Returns:
        str: A ``#`` line naming how many run and their process ids.
    """
    return (f'# busy machine: {len(procs)} busy process{"es" if len(procs) != 1 else ""} (one '
            'pure-Python loop each, single-threaded) run beside every row, pid '
            + ' '.join(str(p.pid) for p in procs))
