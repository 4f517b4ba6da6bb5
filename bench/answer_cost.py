"""Python cost of one Expo manifest answer, in process (no HTTP, no server runtime).

An in-process app on SQLite with one signed project and one published update;
``ExpoResponder.answer`` is called ``N`` times per request shape after a warm-up, and the best
of three ``time.process_time`` runs is printed per answer. CPU time of this process only, so
other load on the machine changes it little. Compare two versions of the code with
``PYTHONPATH=<unpacked src> python bench/answer_cost.py`` (run from the repository root)::

    python bench/answer_cost.py 20000
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the tests' in-process app and export helpers

from device_helpers import in_process_app  # noqa: E402
from harness import create_project, make_export, publish_export  # noqa: E402
from lumora_ota.server.device.expo import ExpoResponder  # noqa: E402
from lumora_ota.signing import generate_signing_identity  # noqa: E402

SIGNATURE = 'sig, keyid="main", alg="rsa-v1_5-sha256"'


def main(calls: int) -> None:
    """Print the per-answer cost of each shape, in microseconds."""
    tmp = Path(tempfile.mkdtemp())
    quiet = {"plan_interval": 3600, "webhook_poll_interval": 60, "stats_flush_interval": 3600}
    with in_process_app(tmp, cache_poll_interval=3600, **quiet) as (client, ctx):
        create_project(client, "cost")
        key_pem, cert_pem = generate_signing_identity("cost")
        body = {
            "keyid": "main",
            "privateKeyPem": key_pem.decode(),
            "certificatePem": cert_pem.decode(),
        }
        client.put("/api/v1/projects/cost/signing", json=body).raise_for_status()
        answer, _ = publish_export(client, "cost", make_export(tmp / "export", seed="cost"))
        head = next(u for u in answer["updates"] if u["platform"] == "android")
        base = {
            "accept": "multipart/mixed", "expo-platform": "android", "expo-runtime-version": "1",
            "expo-protocol-version": "1", "expo-channel-name": "production",
            "expo-expect-signature": SIGNATURE,
        }  # fmt: skip
        shapes = {
            "signed manifest": base,
            "noUpdateAvailable": {**base, "expo-current-update-id": head["id"]},
            "signed manifest, eas-client-id": {**base, "eas-client-id": "device-1"},
        }
        for headers in shapes.values():  # load the cache in the app's own loop
            client.get("/api/v1/expo/cost/manifest", headers=headers).raise_for_status()
        responder = ExpoResponder(ctx, ctx.delivery)

        async def measure(headers: dict[str, str]) -> float:
            for _ in range(500):
                await responder.answer("cost", headers, {}, client_host="127.0.0.1")
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                for _ in range(calls):
                    await responder.answer("cost", headers, {}, client_host="127.0.0.1")
                best = min(best, (time.process_time() - started) / calls * 1e6)
            return best

        for name, headers in shapes.items():
            print(f"{name}: {asyncio.run(measure(headers)):.2f} us per answer")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
