"""Opt-in persistent cache of compiled XLA programs, for short-lived processes (the CLI).

A ``crowdstat fit`` process compiles each jitted driver it runs (seconds each on a CPU; figures
in docs/performance.md) and then exits, so every run pays the compile again. JAX can keep
compiled programs on disk and reload them in the next process when the program (shapes,
dtypes, static arguments, jax/jaxlib version, backend flags) is the same. The drivers bucket
their shapes (task blocks padded to powers of two), so repeated runs on similar tables hit the
cache.

This module never runs at import time and the library never calls it: crowdstat does not change
``jax.config`` at import, because a library must not change its host application's JAX
settings. An application entry point calls :func:`enable_compilation_cache` once, before the
first jitted call; ``crowdstat.cli.main`` is the intended caller.

Environment:

- ``CROWDSTAT_CACHE_DIR``: where to keep the cache (default ``$XDG_CACHE_HOME/crowdstat/jax``,
  else ``~/.cache/crowdstat/jax``);
- ``CROWDSTAT_NO_COMPILE_CACHE=1``: do nothing (e.g. to measure cold compile times);
- a cache directory the user already set for JAX (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config.update("jax_compilation_cache_dir", ...)``) is kept as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir", "enable_compilation_cache", "user_cache_dir"]


def user_cache_dir(sub: str, env_var: str) -> Path:
    """``$<env_var>``, else ``$XDG_CACHE_HOME/crowdstat/<sub>``, else ``~/.cache/crowdstat/<sub>``."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "crowdstat" / sub


def default_cache_dir() -> Path:
    """``$CROWDSTAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/crowdstat/jax``, else ``~/.cache/crowdstat/jax``."""
    return user_cache_dir("jax", "CROWDSTAT_CACHE_DIR")


def enable_compilation_cache(path: str | os.PathLike | None = None, min_compile_time_secs: float = 0.0) -> str | None:
    """Turn on JAX's persistent compilation cache; return the directory used, or None if off.

    Parameters
    ----------
    path
        Cache directory (created if missing). Default: :func:`default_cache_dir`.
    min_compile_time_secs
        Only programs that took at least this long to compile are stored. JAX's default (1 s)
        would skip most of crowdstat's small drivers, hence 0.

    Notes
    -----
    Call it before the first jitted call of the process. A directory that cannot be created
    turns the cache off (with no error): the cache is an optimisation, never a requirement.
    """
    if os.environ.get("CROWDSTAT_NO_COMPILE_CACHE", "").strip() not in ("", "0"):
        return None
    import jax

    current = getattr(jax.config, "jax_compilation_cache_dir", None)  # a config option, read dynamically
    if current:  # the user chose a cache already
        return str(current)
    p = Path(path) if path is not None else default_cache_dir()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(p))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(p)
