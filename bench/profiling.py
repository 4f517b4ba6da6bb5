"""Optional sampling profiles of the server under load (``--profile``), with py-spy.

py-spy writes collapsed stacks ("frame;frame;frame count"); ``summarize`` turns them into the
functions that take the most samples, by self time and inclusive time, so a missed target
comes with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy_executable() -> str | None:
    """py-spy from the running interpreter's environment, or on PATH."""
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def start_profile(pid: int, output: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` and its subprocesses for ``seconds``; None without py-spy."""
    binary = py_spy_executable()
    if binary is None:
        return None
    return subprocess.Popen(
        [
            binary, "record", "--pid", str(pid), "--subprocesses", "--rate", "250",
            "--format", "raw", "--duration", str(max(1, round(seconds))), "--nonblocking", "--gil",
            "--output", str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


def summarize(collapsed: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Top functions by share of samples taken while holding the GIL: self (leaf, any code)
    and inclusive (``lumora_ota`` code only, the server's own share)."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not raw:
            continue
        total += count
        leaf[_frame_name(raw[-1])] += count
        own = {_frame_name(f) for f in raw if "lumora_ota/" in f and "lumora_ota/cli/" not in f}
        for frame in own:
            inclusive[frame] += count
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "self": [(f, round(100 * c / total, 1)) for f, c in leaf.most_common(top)],
        "inclusive": [(f, round(100 * c / total, 1)) for f, c in inclusive.most_common(top)],
    }
