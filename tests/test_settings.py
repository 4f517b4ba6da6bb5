"""The settings model (``lumora_ota.settings``): one declaration per variable, refused at load
with one line naming it (issue 18 item 4)."""

from __future__ import annotations

import pytest

from lumora_ota.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LUMORA_CACHE_POLL_INTERVAL", "0", "must be at least 0.05"),
        ("LUMORA_CACHE_POLL_INTERVAL", "-1", "must be at least 0.05"),
        ("LUMORA_STATS_FLUSH_INTERVAL", "0", "must be at least 0.05"),
        ("LUMORA_PORT", "70000", "must be at most 65535"),
        ("LUMORA_RATE_LIMIT_PER_CLIENT", "1/x", "RATE[/BURST]"),
        ("LUMORA_AUTH_FAILURE_LIMIT", "-1", "RATE[/BURST]"),
        ("LUMORA_STORAGE_URL", "/srv/blobs", "a file:// or s3:// URL"),
        ("LUMORA_HEALTH_FAILURE_RATE", "2", "must be at most 1"),
        ("LUMORA_LOG_LEVEL", "loud", "must be"),
        ("LUMORA_METRICS_BIND", "9102", "host:port"),
        ("LUMORA_ACCEL_REDIRECT_PREFIX", "_lumora_blobs", "starts and ends with /"),
        ("LUMORA_ACCEL_REDIRECT_PREFIX", "/blobs", "starts and ends with /"),
        ("LUMORA_ACCEL_REDIRECT_PREFIX", "/a b/", "starts and ends with /"),
        ("LUMORA_ACCEL_REDIRECT_PREFIX", "/../", "starts and ends with /"),
        ("LUMORA_ACCEL_REDIRECT_PREFIX", "/api/v1/assets/", "not lie under /api/"),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    text = str(refused.value)
    assert "\n" not in text and text.startswith(variable) and message in text
    assert refused.value.variable == variable


def test_values_parse_with_units_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMORA_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("LUMORA_TRUSTED_PROXIES", "10.0.0.1, 10.1.0.0/16")
    monkeypatch.setenv("LUMORA_METRICS_BIND", "127.0.0.1:9102")
    monkeypatch.setenv("LUMORA_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LUMORA_SERVER_IMPL", "uvicorn")
    monkeypatch.setenv("LUMORA_HEADER_TIMEOUT", "")  # empty counts as unset
    settings = Settings.from_env()
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.trusted_proxies == ("10.0.0.1/32", "10.1.0.0/16")
    assert settings.metrics_bind == ("127.0.0.1", 9102)
    assert (settings.log_level, settings.server, settings.header_timeout) == (
        "debug",
        "uvicorn",
        10,
    )
    assert settings.with_overrides(port=4000, host=None).port == 4000
    with pytest.raises(SettingsError, match="LUMORA_PORT"):
        settings.with_overrides(port=0)


def test_the_cli_server_url_is_not_the_server_implementation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``LUMORA_SERVER`` is the CLI's server URL: the server's settings never read it."""
    monkeypatch.setenv("LUMORA_SERVER", "http://127.0.0.1:3002")
    assert Settings.from_env().server == "granian"


def test_accel_redirect_is_refused_without_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """nginx can only send files it can read: with an S3 store the setting is refused at load
    (asset answers are redirects to the bucket there already), not silently ignored."""
    monkeypatch.setenv("LUMORA_ACCEL_REDIRECT_PREFIX", "/_lumora_blobs/")
    assert Settings.from_env().accel_redirect_prefix == "/_lumora_blobs/"
    monkeypatch.setenv("LUMORA_STORAGE_URL", "s3://bucket?endpoint=http://127.0.0.1:1")
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    text = str(refused.value)
    assert text.startswith("LUMORA_ACCEL_REDIRECT_PREFIX needs the file store"), text
    assert "\n" not in text
    monkeypatch.delenv("LUMORA_STORAGE_URL")
    with pytest.raises(SettingsError, match="LUMORA_ACCEL_REDIRECT_PREFIX needs the file store"):
        Settings.from_env().with_overrides(storage_url="s3://bucket")
