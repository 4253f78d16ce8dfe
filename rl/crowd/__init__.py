"""The crowd: simulated annotator populations (:mod:`~rl.crowd.population`), ``rl annotate``
(:mod:`~rl.crowd.annotate`), the Label Studio round trip through files (:mod:`~rl.crowd.labelstudio`,
:mod:`~rl.crowd.ls_file`) and rounds on a real Label Studio
server (``rl labelstudio``: :mod:`~rl.crowd.labelstudio_cli`, :mod:`~rl.crowd.ls_server`,
:mod:`~rl.crowd.ls_round`, :mod:`~rl.crowd.ls_ops`, the loop's :mod:`~rl.crowd.ls_backend`; the
Label Studio venv runs :mod:`~rl.crowd.ls_driver`), the crowd
reward pipeline (:mod:`~rl.crowd.pipeline`) and line rewards placed on tokens
(:mod:`~rl.crowd.rewards`). crowdstat is reached only through its
host-only modules (``crowdstat.io``, ``crowdstat.spec``, the registry) and the ``crowdstat fit`` command."""
