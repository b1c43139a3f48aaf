"""Environments behind one batched protocol (:mod:`marl.envs.base`)."""
