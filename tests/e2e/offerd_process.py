"""Start the built offerd binary on free loopback ports and talk to it with grpcio stubs."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

BUILD_DIR = Path(os.environ.get("OFFERD_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
OFFERD = BUILD_DIR / "bin" / "offerd"
OFFERCTL = BUILD_DIR / "bin" / "offerctl"


@dataclass
class OfferdProcess:
    """A running offerd; `port`/`admin_port` are the bound loopback ports."""

    proc: subprocess.Popen
    port: int
    admin_port: int
    log_path: Path
    channels: list = field(default_factory=list)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_addr(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def channel(self, admin: bool = False) -> grpc.Channel:
        ch = grpc.insecure_channel(self.admin_addr if admin else self.addr)
        self.channels.append(ch)
        return ch

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        for ch in self.channels:
            ch.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_offerd(tmp: Path, snapshot_root: Path, db_path: Path, extra: list[str] | None = None,
                 timeout: float = 60.0) -> OfferdProcess:
    """Starts offerd and waits (with a deadline) until it has written its port files."""
    port_file, admin_port_file = tmp / "port", tmp / "admin_port"
    for f in (port_file, admin_port_file):
        f.unlink(missing_ok=True)
    log_path = tmp / f"offerd-{time.monotonic_ns()}.log"
    args = [str(OFFERD), "--listen=127.0.0.1:0", "--admin_listen=127.0.0.1:0",
            f"--snapshot_root={snapshot_root}", f"--db_path={db_path}",
            f"--port_file={port_file}", f"--admin_port_file={admin_port_file}", *(extra or [])]
    if not any(a.startswith("--metrics_listen") for a in args):
        args.append("--metrics_listen=127.0.0.1:0")  # never the shared default port in tests
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if admin_port_file.exists() and port_file.exists():
            return OfferdProcess(proc, int(port_file.read_text()), int(admin_port_file.read_text()),
                                 log_path)
        if proc.poll() is not None:
            raise RuntimeError(f"offerd exited with {proc.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"offerd did not start within {timeout}s:\n{log_path.read_text()}")


def run_offerd_expect_exit(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs offerd expecting it to exit by itself (bad flags, no bundle...)."""
    return subprocess.run([str(OFFERD), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
