"""Shared by the benchmarks: describe the machine and rewrite one section of RESULTS.md."""

import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by its benchmark script; numbers are from one run on the machine named.\n"


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    import numpy, pandas, scipy, sklearn  # noqa: E401 - versions only

    return (
        f"{cpu}, {os.cpu_count()} cores{memory}; Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"scipy {scipy.__version__}, pandas {pandas.__version__}, scikit-learn {sklearn.__version__}"
    )


def update_results(section: str, body: str) -> None:
    """Replace (or append) the ``## section`` block of RESULTS.md, keeping every other section."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = f"## {section}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    RESULTS.write_text(text.rstrip() + "\n")
