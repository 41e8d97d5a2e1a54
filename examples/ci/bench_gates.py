"""Run ``duh bench --fail-if`` for every build of a recipe that declares bench gates.

``python examples/ci/bench_gates.py examples/ci/duh.toml [duh bench options ...]``: reads the
recipe as ``duh build -c RECIPE --dry-run --json`` prints it (so the gates are declared once, in
the recipe), benches each artifact with its ``bench.fail_if`` gates, and exits with the first
non-zero exit code of ``duh bench`` (10 when a gate trips).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys


def main(argv: list[str]) -> int:
    """Bench every gated build of the recipe ``argv[0]``; extra arguments go to ``duh bench``."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    duh = shutil.which("duh") or "duh"
    plan = subprocess.run(
        [duh, "build", "-c", argv[0], "--dry-run", "--json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    status = 0
    for build in json.loads(plan.stdout)["recipe"]["builds"]:
        gates = build["bench"].get("fail_if", [])
        if not gates:
            continue
        flags = [f for gate in gates for f in ("--fail-if", gate)]
        print(f"== {build['name']}: {' '.join(gates)}", flush=True)
        code = subprocess.run([duh, "bench", build["output"], *flags, *argv[1:]]).returncode
        status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
