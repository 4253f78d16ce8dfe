"""The crowd: simulated annotator populations (:mod:`~rl.crowd.population`), ``rl annotate``
(:mod:`~rl.crowd.annotate`), the Label Studio round trip (:mod:`~rl.crowd.labelstudio`), the crowd
reward pipeline (:mod:`~rl.crowd.pipeline`) and line rewards placed on tokens
(:mod:`~rl.crowd.rewards`). crowdstat is reached only through its
host-only modules (``crowdstat.io``, ``crowdstat.spec``, the registry) and the ``crowdstat fit`` command."""
