"""The evaluation boundary: everything that runs a child and turns what it did into a score.

- evaluation: one evaluation (the train and score phases; EvalRequest, EvalResult)
- budget: Budget, what one evaluation's training may spend (seconds or tokens), checked in one place
- scorer: the score phase's process; batch_server: the harness side of training (data, budget, the model's handover)
- shield: the root of its own a phase runs in; supervise, cgroup, proctree: the limits and the process tree
- environment: the allow-listed environment a phase gets
- child/: what runs inside the training process (the channel's client, the model's export)
- graph/: the model as data (the archive format, the allowed ops, the interpreter)

This file imports nothing: the training process imports child/channel.py and must start fast.
"""
