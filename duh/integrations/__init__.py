"""Running artifacts on platforms people already operate: Ray (``duh.integrations.ray``).

Each integration imports its platform lazily; a missing one is a ``MissingDependencyError``
naming the extra (``duh[ray]``). Integrations use the runtime and ``duh.batch``, never the
compiler.
"""

from __future__ import annotations

__all__: list[str] = []
