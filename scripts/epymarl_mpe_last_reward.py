"""EPyMARL's MPE rewards beside the env's own: is the last step's reward of each episode lost?

    /work/epymarl-venv/bin/python scripts/epymarl_mpe_last_reward.py --epymarl /work/epymarl

Run with EPyMARL's own venv (its ``envs`` package imports smaclite, sacred-free otherwise; needs
``pettingzoo[mpe]==1.24.3``). Issue 25's third point. EPyMARL's ``src/envs/pz_wrapper.py``
(cbc38c0) builds its reward list as ``[rewards[k] for k in self._env.agents]`` *after*
``parallel_env.step``; PettingZoo 1.24's MPE empties ``agents`` on the step that reaches
``max_cycles`` (25, the same step as EPyMARL's ``time_limit=25``), so the list is empty,
``done = all([]) = True``, and the wrapper returns ``[0] * n_agents`` for that step.

This plays the same random actions in EPyMARL's ``GymmaWrapper`` (as its runner makes it:
``pz-mpe-simple-spread-v3``, time limit 25, common reward summed) and in PettingZoo's own
``simple_spread_v3.parallel_env()`` from the same reset seed, and prints, per episode, the two
returns, the last step's reward of each, and whether the steps before agree. Nothing is
hard-coded: the numbers are what the two envs return.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epymarl", type=Path, required=True, help="an EPyMARL checkout (uoe-agents/epymarl at cbc38c0)")
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()
    if not (args.epymarl / "src" / "envs" / "gymma.py").is_file():
        raise SystemExit(f"no EPyMARL checkout at {args.epymarl}: {args.epymarl}/src/envs/gymma.py is missing")
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(args.epymarl / "src"))
    import pettingzoo
    from envs.gymma import GymmaWrapper  # type: ignore[import-not-found]
    from pettingzoo.mpe import simple_spread_v3

    print(f"pettingzoo {pettingzoo.__version__}")
    ep_env = GymmaWrapper(key="pz-mpe-simple-spread-v3", time_limit=25, pretrained_wrapper=None, seed=0,
                          common_reward=True, reward_scalarisation="sum")
    pz_env = simple_spread_v3.parallel_env()
    rng = np.random.default_rng(0)
    gaps = []
    for episode in range(args.episodes):
        ep_env.reset(seed=100 + episode)
        pz_env.reset(seed=100 + episode)
        ep_rewards, pz_rewards = [], []
        done = False
        while not done:
            actions = [int(a) for a in rng.integers(0, 5, size=ep_env.n_agents)]
            _, r, terminated, truncated, _ = ep_env.step(actions)
            ep_rewards.append(r)
            agents = list(pz_env.agents)
            _, rewards, _, _, _ = pz_env.step(dict(zip(agents, actions)))
            pz_rewards.append(float(sum(rewards[k] for k in agents)))
            done = terminated or truncated
        same_before = np.allclose(ep_rewards[:-1], pz_rewards[:-1], rtol=1e-6, atol=1e-6)
        gaps.append(sum(ep_rewards) - sum(pz_rewards))
        print(f"episode {episode}: {len(ep_rewards)} steps; return EPyMARL {sum(ep_rewards):.4f}, PettingZoo "
              f"{sum(pz_rewards):.4f}; last step's reward EPyMARL {ep_rewards[-1]:.4f}, PettingZoo "
              f"{pz_rewards[-1]:.4f}; steps 1-{len(ep_rewards) - 1} equal: {same_before}")
    print(f"EPyMARL's return minus the env's: mean {np.mean(gaps):.4f} over {len(gaps)} random-action episodes")


if __name__ == "__main__":
    main()
