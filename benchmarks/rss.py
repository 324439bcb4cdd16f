"""Run one command under a small parent and write its peak RSS and CPU time: ``python benchmarks/rss.py OUT CMD...``.

On Linux a child's ``ru_maxrss`` keeps the high-water mark of the process that started it (it
survives fork and exec), so a child started by a large benchmark process would report that
process's memory. Started from this small interpreter, it reports its own (plus at most this
shim's ~10 MB). Its CPU time (user + system) counts the descendants it waited for, such as a
process pool's workers. Its wall time is taken here, around the command alone: timed from the
benchmark, it would include this interpreter's own start-up (about 30 ms).
"""

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    out, cmd = argv[0], argv[1:]
    start = time.perf_counter()  # around the command alone: this interpreter's own start-up is not its time
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"ru_maxrss": usage.ru_maxrss, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                   "wall_seconds": wall}, fh)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
