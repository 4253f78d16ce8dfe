"""Running untrusted programs: the sandbox (:mod:`~rl.execution.sandbox`, whose worker program is
:mod:`~rl.execution.worker`), pass@k (:mod:`~rl.execution.passk`) and ``rl check``
(:mod:`~rl.execution.check`). Standard library and NumPy only."""
