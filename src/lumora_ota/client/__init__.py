"""Lumora OTA client SDK: keep a Python app's files up to date from a Lumora server.

The workflow (like CodePush / expo-updates, for desktop apps, kiosks and devices):

1. At start-up, ``launch()`` returns the directory to load: the newest applied update, or
   ``embedded_dir`` (the files shipped with the app) on a fresh install. If the update that
   was launched last time never called ``mark_launch_successful()``, it is marked failed and
   the previous good update (or ``embedded_dir``) is returned instead: automatic rollback.
2. Once the app is up, ``mark_launch_successful()`` confirms the running update.
3. ``check_for_update()`` asks the server (``POST /api/v1/updates/check``). With a
   ``certificate``, the manifest must carry a valid RSA-SHA256 signature before anything is
   downloaded, and a signed freshness statement (``lumora_ota.freshness``): an expired
   answer, one older than the newest seen, or an update older than the running one without
   a signed rollback raises ``StaleAnswerError``.
4. ``download_and_install_update(result)`` downloads only the files not already cached
   (content-addressed by SHA-256, streamed, bounded by the announced size, verified, retried
   with backoff, resumed with ``Range``), then installs the update atomically.
5. ``apply_update()`` makes the next ``launch()`` run it (restart the app to switch now).

Example::

    from lumora_ota.client import AutoUpdateChecker, UpdateManager

    manager = UpdateManager(
        "https://updates.example.com", "my-app", "production", "1", "ios",
        data_dir="~/.my-app/updates", embedded_dir="bundled/",
        on_update_ready=lambda update: manager.apply_update(),
    )
    app_dir = manager.launch()           # load your app from here
    ...                                  # the app is up
    manager.mark_launch_successful()
    with AutoUpdateChecker(manager, interval=3600):
        run_app(app_dir)
    manager.close()                      # flush queued events

Download, install, launch and rollback outcomes are reported to ``POST /api/v1/events`` in
the background; reporting never blocks or breaks the app. Network access goes through a
``FetcherInterface`` (``HttpxFetcher`` by default), which apps may replace.
"""

from lumora_ota.client._internal.download import RetryPolicy
from lumora_ota.client._internal.manifest import Manifest, ManifestAsset
from lumora_ota.client.auto import AutoUpdateChecker
from lumora_ota.client.errors import (
    DownloadError,
    DownloadLengthError,
    HashMismatchError,
    HTTPStatusError,
    InstallError,
    LumoraClientError,
    NetworkError,
    ServerResponseError,
    SignatureError,
    StaleAnswerError,
)
from lumora_ota.client.fetcher import (
    BufferedResponse,
    FetcherInterface,
    FetchResponse,
    HttpxFetcher,
)
from lumora_ota.client.updater import (
    CheckResult,
    DownloadProgress,
    InstalledUpdate,
    UpdateManager,
)

__all__ = [
    "AutoUpdateChecker",
    "BufferedResponse",
    "CheckResult",
    "DownloadError",
    "DownloadLengthError",
    "DownloadProgress",
    "FetchResponse",
    "FetcherInterface",
    "HTTPStatusError",
    "HashMismatchError",
    "HttpxFetcher",
    "InstallError",
    "InstalledUpdate",
    "LumoraClientError",
    "Manifest",
    "ManifestAsset",
    "NetworkError",
    "RetryPolicy",
    "ServerResponseError",
    "SignatureError",
    "StaleAnswerError",
    "UpdateManager",
]
