"""SIGTERM while delta patches (and compressed variants) of a large bundle are being computed:
the server exits within 5 s, its statistics flushed, and the work is redone after restart."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from harness import ServerProcess, create_project, publish_dir

EXIT_WITHIN_SECONDS = 5.0
BUNDLE_BYTES = 3 * 1024 * 1024


def _bundle(seed: int) -> bytes:
    """A large, JavaScript-like bundle: slow to diff and to compress at best quality."""
    rng = random.Random(seed)
    words = [f"function f{i}(a,b){{return a*{i}+b;}}\n".encode() for i in range(5000)]
    out = bytearray()
    while len(out) < BUNDLE_BYTES:
        out += rng.choice(words)
        out += rng.randbytes(8)
    return bytes(out[:BUNDLE_BYTES])


def test_sigterm_during_patch_work_exits_fast(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = ServerProcess(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'lumora.db'}",
        # Statistics are written only at shutdown: the restart proves they were flushed.
        extra_env={"LUMORA_STATS_FLUSH_INTERVAL": "3600", "LUMORA_LOG_LEVEL": "info"},
    ).start()
    try:
        with srv.client() as admin, srv.anon() as device:
            create_project(admin, "big")
            ids = []
            for seed in (1, 2):
                app = tmp_path / f"app{seed}"
                app.mkdir()
                (app / "main.js").write_bytes(_bundle(seed))
                answer = publish_dir(admin, "big", app, launch="main.js")
                ids.append(answer["updates"][0]["id"])
            # The second publish queued patch work (bsdiff of 3 MB) behind the variants.
            for i in range(5):
                check = device.post(
                    "/api/v1/updates/check",
                    json={"projectId": "big", "platform": "ios", "runtimeVersion": "1",
                          "deviceId": f"d{i}"},
                )  # fmt: skip
                assert check.status_code == 200
        assert srv.proc is not None
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(30)
        took = time.monotonic() - started
        assert took < EXIT_WITHIN_SECONDS, f"exit took {took:.1f} s\n{srv.log()[-3000:]}"
        # The worker finished its own shutdown (statistics flushed): never killed, neither
        # by granian's check nor by ours (server/workerstop.py).
        assert "refused to gracefully stop" not in srv.log()
        assert "did not finish its shutdown" not in srv.log()
    finally:
        srv.kill()

    again = ServerProcess(data_dir=data_dir, database_url=srv.database_url,
                          admin_key=srv.admin_key).start()  # fmt: skip
    try:
        with again.client() as admin:
            totals = admin.get("/api/v1/stats", params={"project": "big"}).json()["totals"]
            assert totals["checks"] == 5
            # The lost patch job is redone at start (idempotent catch-up).
            deadline = time.monotonic() + 180
            while not admin.get(f"/api/v1/updates/{ids[1]}/delta").json()["patches"]:
                assert time.monotonic() < deadline, "the patch job was not redone"
                time.sleep(0.5)
    finally:
        again.stop()
