"""Runs the bqemulator BigQuery emulator (REST + Storage gRPC) on loopback for the tests.

DuckDB, behind the emulator, installs its `spatial` extension at start and cannot download it here:
the extension comes as the `duckdb-extension-spatial` package and is installed from that file into
the extension folder DuckDB searches, `$HOME/.duckdb/extensions/v<version>/<platform>/`, of a
private HOME given to the emulator process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

START_TIMEOUT_S = 60.0
EXTENSIONS = ("spatial",)


@dataclass(frozen=True)
class Emulator:
    project: str
    endpoint: str
    storage_endpoint: str


def install_duckdb_extensions(home: Path) -> Path:
    """Install the packaged DuckDB extensions into `home`'s DuckDB extension folder; returns it."""
    import duckdb

    folder = home / ".duckdb" / "extensions"
    connection = duckdb.connect()
    try:
        connection.execute(f"SET extension_directory = '{folder}'")
        for name in EXTENSIONS:
            package = resources.files(f"duckdb_extension_{name}")
            binary = package / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
            if not binary.is_file():
                raise RuntimeError(f"duckdb-extension-{name} has no build for DuckDB {duckdb.__version__}")
            connection.execute(f"INSTALL '{binary}'")
    finally:
        connection.close()
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ready(rest_port: int, grpc_port: int, project: str) -> bool:
    url = f"http://127.0.0.1:{rest_port}/bigquery/v2/projects/{project}/datasets"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status != 200:
                return False
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def running_emulator(workdir: Path, project: str = "linnet-test") -> Iterator[Emulator]:
    """Start `bqemulator start` on free loopback ports, wait until it answers, stop it afterwards.

    Raises:
        RuntimeError: the emulator exited or did not answer within START_TIMEOUT_S (with its log).
    """
    home = workdir / "home"
    install_duckdb_extensions(home)
    rest_port, grpc_port = _free_port(), _free_port()
    executable = shutil.which("bqemulator", path=str(Path(sys.executable).parent)) or "bqemulator"
    log_path = workdir / "bqemulator.log"
    env = {**os.environ, "HOME": str(home), "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [executable, "start", "--rest-host", "127.0.0.1", "--rest-port", str(rest_port),
             "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port), "--project", project,
             "--ephemeral", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(rest_port, grpc_port, project):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bqemulator did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        yield Emulator(project, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
