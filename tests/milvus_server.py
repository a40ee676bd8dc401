"""A Milvus server for the tests: `milvus-lite server` (the milvus-lite wheel's gRPC server) on a free loopback port, so
that several processes share one Milvus as replicas share a cluster (a milvus-lite .db file admits one process).

It can be killed, frozen (SIGSTOP: a server that stops answering) and started again on the same port and data. The
Milvus extra missing is a skip (tests/test_index_contract.py's `needs_engine`, a failure on CI); a server that does
not start is always a failure, with its log.
"""
from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, free_port, stop_process, wait_until


class MilvusLiteServer:
    """One `milvus-lite server` process over `data_dir`; `uri` is what KB_MILVUS_URI names."""

    def __init__(self, data_dir: Path, log: Path):
        self.data_dir, self.log, self.port = Path(data_dir), Path(log), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        """Start it (again: same port, same data) and wait until it accepts connections."""
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                                          str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port)],
                                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def accepting() -> bool:
            assert self.proc.poll() is None, f"milvus-lite server exited with {self.proc.returncode}:\n" \
                                             f"{self.log.read_text()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
            return False

        wait_until(accepting, timeout, lambda: f"milvus-lite server did not listen:\n{self.log.read_text()}",
                   interval=0.1)

    def kill(self) -> None:
        """Die at once, as a crashed server does: SIGKILL."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL, timeout=30)

    def freeze(self) -> None:
        """Stop answering without closing its connections (SIGSTOP), as a hung server does."""
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)  # a frozen server would keep SIGTERM pending
            stop_process(self.proc, signal.SIGTERM, timeout=30, group=True)


@contextlib.contextmanager
def milvus_lite_server(folder: Path):
    """A running MilvusLiteServer with its data and log in `folder`, stopped on every way out."""
    from tests.test_index_contract import needs_engine

    needs_engine("milvus")
    folder.mkdir(parents=True, exist_ok=True)
    server = MilvusLiteServer(folder / "data", folder / "milvus.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
