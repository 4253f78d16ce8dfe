"""Training: PPO with LoRA on line rewards (:mod:`~rl.train.ppo`), TRL GRPO with the crowd reward
(:mod:`~rl.train.grpo`) and the supervised warm start (:mod:`~rl.train.sft`)."""
