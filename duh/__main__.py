"""``python -m duh``: the same as the ``duh`` command."""

from __future__ import annotations

from duh.cli import main

if __name__ == "__main__":
    main()
