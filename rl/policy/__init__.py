"""The policy: models, tokenizers and LoRA (:mod:`~rl.policy.models`), the one sampler
(:mod:`~rl.policy.sampling`) and rollout files and log-probabilities (:mod:`~rl.policy.rollouts`)."""
