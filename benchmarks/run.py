"""Run every benchmark in this folder, one after another (they must not share the CPU).

``python -m benchmarks.run [--quick] [NAME ...]``: each benchmark is ``python -m benchmarks.NAME``;
its output goes to the terminal and its JSON report to ``bench-out/NAME.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


# Not timing benchmarks: ``conformance`` checks the ONNX backend test corpus (``make conformance``).
NOT_BENCHMARKS = frozenset({"run", "conformance"})


def names() -> list[str]:
    """The benchmark modules here."""
    stems = (p.stem for p in HERE.glob("*.py"))
    return sorted(s for s in stems if s not in NOT_BENCHMARKS and not s.startswith("_"))


def main() -> int:
    """Run the named benchmarks (all by default); exit non-zero if any failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {names()})")
    parser.add_argument("--quick", action="store_true", help="short runs")
    args = parser.parse_args()
    out = HERE.parent / "bench-out"
    out.mkdir(exist_ok=True)
    failed = []
    for name in args.names or names():
        print(f"\n=== benchmarks.{name} ===", flush=True)
        cmd = [sys.executable, "-m", f"benchmarks.{name}", "--json", str(out / f"{name}.json")]
        if args.quick:
            cmd.append("--quick")
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
