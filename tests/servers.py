"""Start a server a test needs on 127.0.0.1, wait until it answers, and stop its whole process group."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(cmd: list[str], ready_url: str, log_path: Path, *, env: dict | None = None, timeout: float = 120,
            add_bin_to_path: bool = True):
    """Run ``cmd`` in its own session; yield once ``ready_url`` answers 200; then stop the group.

    ``add_bin_to_path`` puts this interpreter's scripts folder first on PATH (as an activated
    virtual environment would); pass False to run a command the way a user's shell would.
    """
    env = {**os.environ, **(env or {})}
    if add_bin_to_path:
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[:3]} did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
