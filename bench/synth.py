"""Deterministic synthetic files: compressible JavaScript bundles and incompressible images."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

IMAGE_TYPES = ((".png", "image/png"), (".jpg", "image/jpeg"), (".ttf", "font/ttf"))
JS_TYPE = "application/javascript"

# fmt: off
_WORDS = (
    "render", "state", "props", "value", "index", "items", "config", "style", "update",
    "fetch", "module", "export", "default", "return", "const", "function", "useEffect",
    "useState", "navigation", "screen", "button", "onPress", "layout", "theme", "color",
    "padding", "margin", "flex", "width", "height", "source", "image", "text", "view",
    "scroll", "list", "key", "data",
)
# fmt: on


@dataclass(frozen=True)
class SynthFile:
    """A file's bytes with its content hash and manifest metadata."""

    data: bytes
    sha256: str
    content_type: str
    file_extension: str

    @property
    def size(self) -> int:
        """Length in bytes."""
        return len(self.data)

    def ref(self, key: str) -> dict[str, str]:
        """The publish-request reference to this file under ``key``."""
        return {
            "key": key,
            "sha256": self.sha256,
            "contentType": self.content_type,
            "fileExtension": self.file_extension,
        }


def _make(data: bytes, content_type: str, ext: str) -> SynthFile:
    return SynthFile(data, hashlib.sha256(data).hexdigest(), content_type, ext)


def js_bundle(seed: str, size: int) -> SynthFile:
    """Minified-JavaScript-like text of ``size`` bytes (compresses about 4x, like Metro's)."""
    rng = random.Random(seed)
    parts: list[str] = [f"/* bundle {seed} */\n"]
    length = len(parts[0])
    while length < size:
        a, b, c = rng.choice(_WORDS), rng.choice(_WORDS), rng.choice(_WORDS)
        n = rng.randrange(1 << 20)
        line = (
            f"__d(function(g,r,i,a,m,e,d){{var {a}{n % 97}=r(d[{n % 911}]);"
            f"e.{b}=function({c}){{return {a}{n % 97}.{b}({c},{n})}}}},{n},[{n % 13}]);\n"
        )
        parts.append(line)
        length += len(line)
    return _make("".join(parts).encode()[:size], JS_TYPE, ".js")


def image(seed: str, size: int, kind: int = 0) -> SynthFile:
    """Random bytes standing in for an image or font (does not compress)."""
    ext, content_type = IMAGE_TYPES[kind % len(IMAGE_TYPES)]
    return _make(random.Random(seed).randbytes(size), content_type, ext)


def asset_pool(count: int, seed: str) -> list[SynthFile]:
    """``count`` distinct small assets (1-16 KB) that updates share."""
    rng = random.Random(seed)
    return [image(f"{seed}-{i}", rng.randrange(1024, 16 * 1024), i) for i in range(count)]
