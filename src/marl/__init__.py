"""marl: Hydra-configured cooperative multi-agent Q-learning (QMIX, VDN, independent Q-learning).

Start at :mod:`marl.experiment` (the training loop) and :mod:`marl.envs.base` (the env protocol).
"""

__version__ = "0.1.0"
