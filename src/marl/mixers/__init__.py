"""Mixers turn per-agent values [..., n_agents] (and the state [..., state_dim]) into [..., out_dim].

``out_dim`` is 1 for a joint value (QMIX, VDN) and n_agents for independent learners (``none``):
the learner treats every output column as one regression target, so it never needs to know which
mixer it has. ``needs_state`` is checked against the env before the first step.
"""
