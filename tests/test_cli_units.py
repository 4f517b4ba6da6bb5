"""Unit tests of the CLI's pure parts: publish planning, config file, API error mapping."""

from __future__ import annotations

import ast
import http.server
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import make_export
from lumora_ota.cli import config as cli_config
from lumora_ota.cli.api import ApiError, LumoraApi
from lumora_ota.cli.errors import CliError, one_line
from lumora_ota.cli.main import run
from lumora_ota.cli.publish_plan import (
    content_type_for,
    digest_files,
    plan_publish,
    publish_request,
    runtime_version_from_config,
)

# ---------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("ext", "expected"),
    [
        (".png", "image/png"),
        (".PNG", "image/png"),
        (".ttf", "font/ttf"),
        (".js", "application/javascript"),
        (".json", "application/json"),
        (".jpg", "image/jpeg"),
        (".unknownext", "application/octet-stream"),
        ("", "application/octet-stream"),
    ],
)
def test_content_type_for(ext: str, expected: str) -> None:
    assert content_type_for(ext) == expected


# ---------------------------------------------------------------- runtime version


def test_runtime_version_string_and_platform_override() -> None:
    config = {"runtimeVersion": "2", "ios": {"runtimeVersion": "3"}}
    assert runtime_version_from_config(config, ["android"]) == "2"
    assert runtime_version_from_config(config, ["ios"]) == "3"
    with pytest.raises(CliError, match="different runtime versions"):
        runtime_version_from_config(config, ["ios", "android"])


def test_runtime_version_policies() -> None:
    config = {
        "version": "1.4.0",
        "sdkVersion": "50.0.0",
        "ios": {"buildNumber": "7"},
        "android": {"versionCode": 7},
    }
    assert runtime_version_from_config(
        {**config, "runtimeVersion": {"policy": "appVersion"}}, ["ios", "android"]
    ) == ("1.4.0")
    assert (
        runtime_version_from_config(
            {**config, "runtimeVersion": {"policy": "nativeVersion"}}, ["ios"]
        )
        == "1.4.0(7)"
    )
    assert (
        runtime_version_from_config({**config, "runtimeVersion": {"policy": "sdkVersion"}}, ["ios"])
        == "exposdk:50.0.0"
    )
    with pytest.raises(CliError, match="--runtime-version"):
        runtime_version_from_config(
            {**config, "runtimeVersion": {"policy": "fingerprint"}}, ["ios"]
        )
    with pytest.raises(CliError, match="--runtime-version"):
        runtime_version_from_config(config, ["ios"])


# ---------------------------------------------------------------- planning


def test_plan_real_fixture(fixtures_dir: Path) -> None:
    root = fixtures_dir / "expo-export-1674170951"
    plan = plan_publish(root)
    assert plan.source == "expo-export"
    assert plan.runtime_version == "1"
    assert list(plan.platforms) == ["ios", "android"]
    ios = plan.platforms["ios"]
    assert ios.launch_asset.key == "bundles/ios-9d01842d6ee1224f7188971c5d397115.js"
    assert ios.launch_asset.content_type == "application/javascript"
    assert [(a.key, a.file_extension, a.content_type) for a in ios.assets] == [
        ("assets/4f1cb2cac2370cd5050681232e8575a8", ".png", "image/png")
    ]
    assert plan.extra["expoClient"]["slug"] == "expo-updates-client"
    # The png is shared by both platforms: three distinct files, each hashed once.
    digests = digest_files(plan.unique_paths())
    assert len(digests) == 3
    by_key = {p.relative_to(root).as_posix(): d.sha256 for p, d in digests.items()}
    assert by_key["assets/4f1cb2cac2370cd5050681232e8575a8"] == (
        "24272cdaeff82cc5facdaccd982a6f05b60c4504704bbf94c19a6388659880bb"
    )
    body = publish_request(
        plan, digests, project="p", channel="c", message="m", rollout=10, mandatory=True
    )
    assert body["platforms"]["android"]["launchAsset"]["sha256"] == (
        "b77916434d0b867e6a0861a134d331883fe97133bfe1dec8ff5ccedd2e4c7b99"
    )
    assert body["runtimeVersion"] == "1" and body["rollout"] == 10 and body["mandatory"] is True


def test_plan_old_fixture_needs_runtime_version(fixtures_dir: Path) -> None:
    root = fixtures_dir / "expo-export-1666629107"
    with pytest.raises(CliError, match="--runtime-version"):
        plan_publish(root)
    plan = plan_publish(root, runtime_version="1", platform="android")
    assert list(plan.platforms) == ["android"] and plan.extra == {}
    with pytest.raises(CliError, match="no web bundle"):
        plan_publish(root, runtime_version="1", platform="web")


def test_plan_export_errors(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="not a directory"):
        plan_publish(tmp_path / "absent")
    with pytest.raises(CliError, match=r"no metadata\.json"):
        plan_publish(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(CliError, match="not valid JSON"):
        plan_publish(tmp_path)
    root = make_export(tmp_path / "exp")
    bundle = next((root / "bundles").iterdir())
    bundle.unlink()
    with pytest.raises(CliError, match="does not exist"):
        plan_publish(root)
    meta = {"fileMetadata": {"ios": {"bundle": "../outside.js", "assets": []}}}
    (root / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CliError, match="unsafe path"):
        plan_publish(root)


def test_plan_plain_directory(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / "lib" / "util.py").write_text("X = 1\n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / ".DS_Store").write_text("x")
    with pytest.raises(CliError, match="--runtime-version"):
        plan_publish(tmp_path, launch_asset="main.py")
    plan = plan_publish(tmp_path, launch_asset="main.py", runtime_version="1")
    assert plan.source == "directory"
    assert list(plan.platforms) == ["ios", "android", "web"]
    ios = plan.platforms["ios"]
    assert ios.launch_asset.key == "main.py"
    assert [a.key for a in ios.assets] == ["lib/util.py", "logo.png"]
    assert ios.assets[1].content_type == "image/png"
    plan = plan_publish(tmp_path, launch_asset="main.py", runtime_version="1", platform="web")
    assert list(plan.platforms) == ["web"]
    with pytest.raises(CliError, match="launch asset not found"):
        plan_publish(tmp_path, launch_asset="nope.py", runtime_version="1")
    with pytest.raises(CliError, match="not inside"):
        plan_publish(tmp_path / "lib", launch_asset="../main.py", runtime_version="1")
    with pytest.raises(CliError, match="unknown platform"):
        plan_publish(tmp_path, launch_asset="main.py", runtime_version="1", platform="tv")


# ---------------------------------------------------------------- config file


def test_config_round_trip_mode_and_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = cli_config.config_path()
    assert path == tmp_path / "lumora" / "config.json"
    assert cli_config.load_config() == cli_config.CliConfig()
    saved = cli_config.CliConfig(server="http://h:1", api_key="lum_k", project="p")
    cli_config.save_config(saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli_config.load_config() == saved
    resolved = cli_config.resolve_config(cli_config.CliConfig(project="flag"))
    assert resolved == cli_config.CliConfig(server="http://h:1", api_key="lum_k", project="flag")
    path.write_text("[1, 2]")
    with pytest.raises(CliError, match="JSON object"):
        cli_config.load_config()


def test_default_server_when_nothing_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert cli_config.resolve_config(cli_config.CliConfig()).server == "http://127.0.0.1:3002"


# ---------------------------------------------------------------- API errors


def _api(handler: httpx.MockTransport) -> LumoraApi:
    return LumoraApi("http://lumora.test", "lum_key", transport=handler)


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        (401, "rejected the API key: bad key"),
        (403, "permission denied: bad key"),
        (404, "not found: bad key"),
        (409, "bad key (409)"),
        (500, "failed (500): bad key"),
    ],
)
def test_problem_documents_become_one_line_errors(status: int, fragment: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer lum_key"
        return httpx.Response(
            status,
            json={"title": "x", "status": status, "detail": "bad\nkey"},
            headers={"content-type": "application/problem+json"},
        )

    with pytest.raises(ApiError) as info:
        _api(httpx.MockTransport(handler)).get("/whoami")
    assert fragment in info.value.message
    assert "\n" not in info.value.message
    assert info.value.status == status


def test_connection_refused_and_non_json_answers() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(ApiError, match="cannot reach the Lumora server"):
        _api(httpx.MockTransport(refuse)).get("/whoami")
    html = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))
    with pytest.raises(ApiError, match="not JSON"):
        _api(html).get("/whoami")
    with pytest.raises(CliError, match="no API key"):
        LumoraApi("http://x", None).get("/whoami")
    with pytest.raises(CliError, match="http://"):
        LumoraApi("ftp://x", "k")


@given(st.text())
def test_one_line_never_has_newlines(text: str) -> None:
    assert "\n" not in one_line(text) and "\r" not in one_line(text)


def test_run_reports_usage_errors_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["updates", "no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_every_command_has_help_with_an_example() -> None:
    import typer

    from lumora_ota.cli.main import app

    def leaves(command: Any, path: str) -> list[tuple[str, Any]]:
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            return [(path, command)]
        return [leaf for name, sub in subcommands.items() for leaf in leaves(sub, f"{path} {name}")]

    commands = leaves(typer.main.get_command(app), "lumora")
    assert len(commands) >= 20
    for path, command in commands:
        assert "Example" in (command.help or ""), f"{path} --help has no example"


def test_upload_streams_the_file_with_its_length(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4000  # a bit over 1 MB: several chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["length"] = request.headers.get("content-length")
        seen["chunked"] = request.headers.get("transfer-encoding")
        seen["body"] = request.read()
        return httpx.Response(201, json={"sha256": "ab", "size": len(data), "created": True})

    progress: list[int] = []
    answer = _api(httpx.MockTransport(handler)).upload_blob(
        "my-app", "ab" * 32, path, len(data), on_progress=progress.append
    )
    assert answer["created"] is True
    assert seen["url"] == f"http://lumora.test/api/v1/assets/{'ab' * 32}?project=my-app"
    assert seen["length"] == str(len(data)) and seen["chunked"] is None
    assert seen["body"] == data
    assert sum(progress) == len(data) and len(progress) > 1


# ---------------------------------------------------------------- start-up cost


def _modules_loaded_by(args: list[str], prefixes: tuple[str, ...]) -> tuple[int, list[str]]:
    """Run the CLI with ``args`` in a fresh interpreter: its exit code and the modules it
    loaded whose names start with ``prefixes``."""
    script = (
        "import sys\n"
        "from lumora_ota.cli.main import run\n"
        f"code = run({args!r})\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({prefixes!r}))\n"
        "sys.stderr.write(repr((code, loaded)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    code, loaded = ast.literal_eval(done.stderr.strip().splitlines()[-1])
    return code, loaded


def test_help_loads_neither_httpx_nor_pydantic() -> None:
    assert _modules_loaded_by(["--help"], ("httpx", "pydantic")) == (0, [])


def test_a_command_group_loads_only_its_own_modules() -> None:
    code, loaded = _modules_loaded_by(["deployments", "--help"], ("lumora_ota.cli.", "httpx"))
    assert code == 0
    assert "lumora_ota.cli.deployments" in loaded
    assert not {"lumora_ota.cli.publish", "lumora_ota.cli.keys", "lumora_ota.cli.api"} & set(loaded)
    assert "httpx" not in loaded


def test_outage_answers_read_as_one_clear_line() -> None:
    """507 says the server is out of space; 503 says it is unavailable and when to retry."""
    import httpx

    from lumora_ota.cli.api import _error_from

    problem = {"content-type": "application/problem+json"}
    full = httpx.Response(
        507, headers=problem, json={"detail": "the blob store (local disk) on the server is out "
                                    "of space; nothing was stored"},
    )  # fmt: skip
    assert str(_error_from(full, "http://ota")) == (
        "the server at http://ota is out of space (507): the blob store (local disk) on the "
        "server is out of space; nothing was stored"
    )
    down = httpx.Response(
        503, headers={**problem, "retry-after": "5"},
        json={"detail": "the database (postgresql) is unavailable (connection refused)"},
    )  # fmt: skip
    assert str(_error_from(down, "http://ota")) == (
        "the server at http://ota is unavailable (503): the database (postgresql) is "
        "unavailable (connection refused); retry in 5 s"
    )


# ---------------------------------------------------------------- typed answers


class _Malformed(http.server.BaseHTTPRequestHandler):
    """Answers every request with 200 and a JSON document of the wrong shape."""

    body = json.dumps({"items": [{"id": 7}], "projects": "none", "role": None}).encode()

    def _answer(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def malformed_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Malformed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "command",
    [
        ["whoami"],
        ["projects", "list"],
        ["deployments", "list", "--project", "p"],
        ["updates", "list", "--project", "p"],
        ["updates", "view", "0b7e6c1e-3f2a-4a8e-9d55-2f7f0c1c9a10"],
        ["updates", "stats", "--project", "p"],
        ["devices", "view", "d1", "--project", "p"],
        ["webhooks", "list", "--project", "p"],
        ["keys", "list"],
        ["audit"],
        ["embedded", "delta", "0b7e6c1e-3f2a-4a8e-9d55-2f7f0c1c9a10"],
    ],
)
def test_a_malformed_answer_is_one_line_and_a_failure(
    command: list[str], malformed_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run([*command, "--server", malformed_server, "--api-key", "lum_key"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "with an unexpected answer: " in err and "Traceback" not in err, err


def test_typed_reads_name_the_member_out_of_shape() -> None:
    from lumora_ota.api_models import WhoAmIAnswer

    answer = {"keyId": "k", "name": None, "role": "admin", "projectId": None, "projects": [{}]}
    api = _api(httpx.MockTransport(lambda r: httpx.Response(200, json=answer)))
    with pytest.raises(ApiError, match=r"answered GET /whoami with an unexpected answer: "
                       r"projects\.0\.id: Field required \(and 2 more\)"):  # fmt: skip
        api.read(WhoAmIAnswer, "GET", "/whoami")
    answer["projects"] = [{"id": "i", "slug": "s", "name": "n", "new": 1}]
    me = _api(httpx.MockTransport(lambda r: httpx.Response(200, json=answer))).read(
        WhoAmIAnswer, "GET", "/whoami"
    )
    assert me.projects[0].slug == "s"  # members a newer server adds are kept, not refused
