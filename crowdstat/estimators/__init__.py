"""The estimators: one module per method behind one result contract and one registry.

:data:`REGISTRY` (:mod:`crowdstat.estimators.registry`) maps each name in :data:`METHODS` to its
configuration dataclass (the single source of its parameters' defaults, help and CLI flags) and
to its implementation, ``fit(table, cfg, common, dtype) ->``
:class:`~crowdstat.estimators.result.EstimatorFit`. The CLI, :func:`crowdstat.fit`,
``crowdstat compare`` and ``rl`` read method names and parameters from here.

Importing this package loads the standard library only (no JAX, NumPy or pandas); the method
modules are imported when a method runs.
"""

from __future__ import annotations

from crowdstat.estimators.registry import (
    METHODS,
    REGISTRY,
    BayesConfig,
    CommonConfig,
    Config,
    EMConfig,
    MajorityConfig,
    Method,
    ProximalConfig,
    SequentialConfig,
    make_configs,
    param_fields,
    parse_gamma,
    parse_param,
)

__all__ = [
    "METHODS",
    "REGISTRY",
    "Method",
    "Config",
    "CommonConfig",
    "MajorityConfig",
    "SequentialConfig",
    "ProximalConfig",
    "EMConfig",
    "BayesConfig",
    "make_configs",
    "param_fields",
    "parse_gamma",
    "parse_param",
]

#: the submodules, imported on first attribute access (``crowdstat.estimators.sequential``)
_SUBMODULES: tuple[str, ...] = (
    "l1",
    "majority",
    "sequential",
    "proximal",
    "dawid_skene",
    "bayes",
    "posterior",
    "ell",
    "result",
    "registry",
    "glad",
    "mace",
    "agreement",
    "calibration",
    "intervals",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"crowdstat.estimators.{name}")
    raise AttributeError(f"module 'crowdstat.estimators' has no attribute {name!r}")
