"""Integrations of rl with other training stacks (the top layer of rl, beside rl.cli).

:mod:`rl.integrations.verl_reward`: crowdstat's line posteriors as token-level rewards in verl
(docs/verl.md). Each integration imports its third-party stack lazily, so that the main venv, which
has none of them, can import the pure parts.
"""

__all__: list[str] = []
