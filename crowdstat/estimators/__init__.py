"""The estimators: one module per method behind one result contract and one registry.

``METHODS`` is the one list of method names; the CLI choices, ``crowdstat compare`` and ``rl``
read it from here.
"""

from __future__ import annotations

METHODS = ("majority", "sequential", "proximal", "em1", "em2", "bayes")

__all__ = ["METHODS"]
