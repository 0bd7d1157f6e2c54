"""gs:// for the tests: gcp-storage-emulator on loopback, plus a loopback metadata server for credentials.

Beam asks google-auth for credentials before it touches gs://; without any it retries for half a
minute. A loopback stand-in for the GCE metadata server answers that lookup at once with a token
the storage emulator ignores. google-auth reads the metadata address at import, so code using this
runs in a fresh process (`python tests/gcs_emulator.py SCENARIO`) with the environment set first.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

BUCKET = "linnet-test"


class _MetadataHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        path = self.path.split("?")[0]
        if path.endswith("/token"):
            token = {"access_token": "test", "expires_in": 3600, "token_type": "Bearer"}
            body, kind = json.dumps(token), "json"
        elif path.endswith("/service-accounts/default/"):
            body, kind = json.dumps({"email": "test@linnet-test.iam", "scopes": ["cloud-platform"],
                                     "aliases": ["default"]}), "json"
        elif path.endswith("/project/project-id"):
            body, kind = "linnet-test", "text"
        elif path.endswith("/universe/universe-domain"):
            body, kind = "googleapis.com", "text"
        elif path in ("", "/"):
            body, kind = "", "text"
        else:
            self.send_response(404)
            self.send_header("Metadata-Flavor", "Google")
            self.end_headers()
            return
        payload = body.encode()
        self.send_response(200)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/json" if kind == "json" else "application/text")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_gcs() -> Iterator[dict[str, str]]:
    """Start the storage emulator (bucket `linnet-test`, in memory) and the metadata stand-in; yields
    the environment a child process needs to use them."""
    from gcp_storage_emulator.server import create_server

    metadata = ThreadingHTTPServer(("127.0.0.1", 0), _MetadataHandler)
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    storage_port = _free_port()
    storage = create_server("127.0.0.1", storage_port, in_memory=True, default_bucket=BUCKET)
    storage.start()
    host = f"127.0.0.1:{metadata.server_address[1]}"
    try:
        yield {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{storage_port}", "GCE_METADATA_HOST": host,
               "GCE_METADATA_IP": host, "GOOGLE_CLOUD_PROJECT": "linnet-test"}
    finally:
        storage.stop()
        metadata.shutdown()


def emulator_bucket(env: Mapping[str, str]) -> Any:
    """The test bucket through google-cloud-storage, anonymously (the emulator checks no token): how a
    test process puts inputs on gs:// and reads outputs back. Beam's gs:// would ask for credentials
    at a metadata address this process read before the emulator started."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"], credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": env["STORAGE_EMULATOR_HOST"]})
    return client.bucket(BUCKET)


def run_scenario(script: Path, workdir: Path) -> dict:
    """Run `script` (a file whose `main(workdir) -> dict` uses gs://) in a child process against a fresh
    emulator; returns what it returned."""
    with running_gcs() as env:
        launcher = (f"import json, runpy, sys; result = runpy.run_path({str(script)!r})['main']"
                    f"({str(workdir)!r}); print('RESULT ' + json.dumps(result, default=str))")
        done = subprocess.run([sys.executable, "-c", launcher], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"scenario {script.name} failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))
