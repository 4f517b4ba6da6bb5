"""``lumora codesigning``: make or import a manifest-signing key pair and turn signing on."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lumora_ota.cli.errors import CliError
from lumora_ota.cli.options import (
    ApiKeyOption,
    JsonOption,
    ProjectOption,
    ServerOption,
    open_api,
    pick_project,
)
from lumora_ota.cli.output import note, print_json

if TYPE_CHECKING:
    from lumora_ota.signing import SigningIdentity

app = typer.Typer(
    rich_markup_mode="markdown",
    name="codesigning",
    help="Manifest code signing (expo-signature).",
    no_args_is_help=True,
)

PRIVATE_KEY_FILE = "private-key.pem"
CERTIFICATE_FILE = "certificate.pem"


@app.command("generate")
def generate(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for private-key.pem and certificate.pem.")
    ],
    keyid: Annotated[str, typer.Option("--keyid", help="Key id named in signatures.")] = "main",
    common_name: Annotated[
        str | None,
        typer.Option("--common-name", help="Certificate subject [default: the project]."),
    ] = None,
    valid_days: Annotated[
        int, typer.Option("--valid-days", min=1, help="Certificate lifetime in days.")
    ] = 3650,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite existing files in --out.")
    ] = False,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Generate an RSA key and self-signed code-signing certificate, save them in --out
    (private key mode 0600) and turn on manifest signing for the project under --keyid.

    Put certificate.pem in your app (expo-updates `codeSigningCertificate`, with
    `codeSigningMetadata: {keyid, alg: "rsa-v1_5-sha256"}`).

    Example: lumora codesigning generate --project my-app --keyid main --out ./keys
    """
    chosen = pick_project(project)
    key_path = out / PRIVATE_KEY_FILE
    cert_path = out / CERTIFICATE_FILE
    if out.exists() and not out.is_dir():
        raise CliError(f"--out is not a directory: {out}")
    existing = [p for p in (key_path, cert_path) if p.exists()]
    if existing and not force:
        raise CliError(f"{existing[0]} exists; pass --force to replace it")
    try:
        # Made before signing is turned on, so a bad --out fails with nothing changed.
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out}: {exc.strerror or exc}") from exc
    # Imported here so the other commands do not pay for loading cryptography.
    from lumora_ota.signing import generate_signing_identity

    private_pem, cert_pem = generate_signing_identity(
        common_name or f"lumora {chosen}", valid_days=valid_days
    )
    from lumora_ota.api_models import SigningSetAnswer

    with open_api(server, api_key) as api:
        answer = api.read(
            SigningSetAnswer,
            "PUT",
            f"/projects/{chosen}/signing",
            json={
                "keyid": keyid,
                "privateKeyPem": private_pem.decode("ascii"),
                "certificatePem": cert_pem.decode("ascii"),
            },
        )
    _write_private(out, key_path, private_pem, mode=0o600)
    _write_private(out, cert_path, cert_pem, mode=0o644)
    result = {
        "project": chosen,
        "keyid": answer.keyid,
        "privateKeyPath": str(key_path),
        "certificatePath": str(cert_path),
        "validDays": valid_days,
    }
    if as_json:
        print_json(result)
        return
    note(
        f"signing on for {chosen} (keyid {result['keyid']}); wrote {key_path} (keep it"
        f" secret) and {cert_path} (embed it in the app)"
    )


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > 64 * 1024:
        raise CliError(f"the {what} {path} is not a PEM file (over 64 KiB)")
    return data


def _load_key_pair(
    keyid: str, private_key: Path, certificate: Path, purpose: str
) -> tuple[bytes, bytes, SigningIdentity]:
    """The two PEM files and the identity they make, checked as expo-updates checks them
    (RSA >= 2048 bits, matching certificate, digitalSignature, codeSigning, valid today);
    a one-line ``CliError`` saying what ``purpose`` ("import", "use") could not do."""
    private_pem = _read_pem(private_key, "private key")
    cert_pem = _read_pem(certificate, "certificate")
    # Imported here so the other commands do not pay for loading cryptography.
    from lumora_ota.signing import SigningError, load_signing_identity

    try:
        identity = load_signing_identity(keyid, private_pem, cert_pem, require_valid_now=True)
    except SigningError as exc:
        raise CliError(f"cannot {purpose} the key pair: {exc}") from None
    return private_pem, cert_pem, identity


@app.command("import")
def import_pair(
    private_key: Annotated[
        Path, typer.Option("--private-key", help="PEM private key (RSA, at least 2048 bits).")
    ],
    certificate: Annotated[
        Path, typer.Option("--certificate", help="PEM code-signing certificate of that key.")
    ],
    keyid: Annotated[
        str, typer.Option("--keyid", help="Key id: the keyid of the app's codeSigningMetadata.")
    ] = "main",
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Turn on manifest signing with a key pair you already have, such as the one
    `npx expo-updates codesigning:generate` writes (keys/private-key.pem and
    certs/certificate.pem).

    Checked here first, as expo-updates checks it: an RSA key of at least 2048 bits, a
    certificate that belongs to it, key usage digitalSignature, extended key usage
    codeSigning, valid today. Use the keyid your app names in `codeSigningMetadata`.

    Example: lumora codesigning import --project my-app --keyid main
    --private-key keys/private-key.pem --certificate certs/certificate.pem
    """
    chosen = pick_project(project)
    private_pem, cert_pem, identity = _load_key_pair(keyid, private_key, certificate, "import")
    from lumora_ota.api_models import SigningSetAnswer

    with open_api(server, api_key) as api:
        answer = api.read(
            SigningSetAnswer,
            "PUT",
            f"/projects/{chosen}/signing",
            json={
                "keyid": keyid,
                "privateKeyPem": private_pem.decode("ascii", errors="replace"),
                "certificatePem": cert_pem.decode("ascii", errors="replace"),
            },
        )
    result = {
        "project": chosen,
        "keyid": answer.keyid,
        "certificateSubject": identity.certificate.subject.rfc4514_string(),
        "validUntil": identity.certificate.not_valid_after_utc.isoformat(),
    }
    if as_json:
        print_json(result)
        return
    note(
        f"signing on for {chosen} (keyid {result['keyid']}, certificate"
        f" {result['certificateSubject']}, valid until {result['validUntil'][:10]})"
    )


def _write_private(directory: Path, path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` atomically; the temp file is 0600 from birth, then gets ``mode``."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp_name, mode)
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc


AssetOriginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--asset-origin",
        help="Another origin asset URLs may point at (a CDN) [default: the server's only].",
    ),
]


@app.command("publisher-held")
def publisher_held(
    private_key: Annotated[
        Path, typer.Option("--private-key", help="PEM private key; it never leaves this machine.")
    ],
    certificate: Annotated[
        Path, typer.Option("--certificate", help="PEM code-signing certificate of that key.")
    ],
    keyid: Annotated[
        str, typer.Option("--keyid", help="Key id: the keyid of the app's codeSigningMetadata.")
    ] = "main",
    timestamp_certificate_out: Annotated[
        Path | None,
        typer.Option(
            "--timestamp-certificate-out",
            help="Where to write the server's timestamp certificate (for the Lumora SDK's "
            "freshness_certificate).",
        ),
    ] = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Sign with a key the server never sees (publisher-held mode): only the certificate
    and a signature over the constant noUpdateAvailable directive are uploaded, and the
    updates already live are signed here at once. From then on the server serves an update
    only once `lumora publish --private-key` (or `lumora codesigning sign`) has signed it.
    Run again with the same certificate, it keeps the signatures and the timestamp key.
    Works with the key pair of `npx expo-updates codesigning:generate`.

    Example: lumora codesigning publisher-held --project my-app --keyid main
    --private-key keys/private-key.pem --certificate certs/certificate.pem
    """
    chosen = pick_project(project)
    private_pem, cert_pem, identity = _load_key_pair(keyid, private_key, certificate, "use")
    from lumora_ota.api_models import SigningSetAnswer
    from lumora_ota.cli.publisher_signing import NO_UPDATE_BODY, sign_pending
    from lumora_ota.signing import sign_rsa_sha256

    with open_api(server, api_key) as api:
        answer = api.read(
            SigningSetAnswer,
            "PUT",
            f"/projects/{chosen}/signing",
            json={
                "mode": "publisher",
                "keyid": keyid,
                "certificatePem": cert_pem.decode("ascii", errors="replace"),
                "noUpdateSignature": sign_rsa_sha256(identity.private_key, NO_UPDATE_BODY),
            },
        )
        # Updates already live would otherwise reach no device until `codesigning sign`.
        signed = sign_pending(api, chosen, private_pem)
    timestamp_pem = answer.timestamp_certificate_pem
    if timestamp_certificate_out is not None and timestamp_pem is not None:
        try:
            timestamp_certificate_out.write_text(timestamp_pem)
        except OSError as exc:
            raise CliError(f"cannot write {timestamp_certificate_out}: {exc}") from exc
    result = {"project": chosen, "keyid": keyid, "mode": "publisher", "signed": signed}
    if as_json:
        print_json({**result, "timestampCertificatePem": timestamp_pem})
        return
    note(f"signing on for {chosen} (keyid {keyid}); the private key stays on this machine")
    if signed:
        note(f"signed {signed} bodies of updates already live")


def _sign_command(
    private_key: Path,
    asset_origin: list[str] | None,
    update_ids: list[str] | None,
    as_json: bool,
    project: str | None,
    server: str | None,
    api_key: str | None,
) -> None:
    chosen = pick_project(project)
    private_pem = _read_pem(private_key, "private key")
    from lumora_ota.cli.publisher_signing import sign_pending

    with open_api(server, api_key) as api:
        signed = sign_pending(
            api, chosen, private_pem, update_ids=update_ids, origins=asset_origin or ()
        )
    if as_json:
        print_json({"project": chosen, "signed": signed})
        return
    note(f"signed {signed} bodies of {chosen}")


@app.command("sign")
def sign(
    private_key: Annotated[Path, typer.Option("--private-key", help="PEM private key.")],
    update: Annotated[
        list[str] | None,
        typer.Option("--update", help="Sign only these updates [default: every unsigned one]."),
    ] = None,
    asset_origin: AssetOriginOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Sign what the server would serve but may not yet (publisher-held mode): new updates,
    rollback and promote copies, roll-back-to-embedded directives. Each body is checked
    before signing: compact JSON, the update it is listed for, asset URLs on the server's
    origin (or --asset-origin).

    Example: lumora codesigning sign --project my-app --private-key keys/private-key.pem
    """
    _sign_command(private_key, asset_origin, update, as_json, project, server, api_key)


@app.command("resign")
def resign(
    private_key: Annotated[Path, typer.Option("--private-key", help="PEM private key.")],
    asset_origin: AssetOriginOption = None,
    as_json: JsonOption = False,
    project: ProjectOption = None,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Sign every active update again after the server's asset base URL changed
    (publisher-held mode): manifests name their asset URLs, so their bytes changed, and the
    server serves none of them until they are signed.

    Example: lumora codesigning resign --project my-app --private-key keys/private-key.pem
    --asset-origin https://cdn.example.com
    """
    _sign_command(private_key, asset_origin, None, as_json, project, server, api_key)
