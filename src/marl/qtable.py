"""Print the learned joint values of a matrix game, laid out like Table 1 of the QMIX paper.

    python -m marl.qtable RUN_DIR [--json]

For each of the game's matrices (e.g. state 1, 2A, 2B of the two-step game) the env is stepped
through the joint-action prefix that reaches it, then Q_tot = mixer(Q_1(a_1), Q_2(a_2), s) is
evaluated for every joint action. Rows are agent 1's actions, columns agent 2's. For ``none``
(no joint value) the table holds Q_1(a_1) + Q_2(a_2) and the per-agent values are listed too.
For ``ow_qmix`` and ``cw_qmix`` it is QMIX's Q_tot, which the agents act on, not the joint Q*.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from marl.checkpoint import CHECKPOINT_FILE, load
from marl.run_folder import CONFIG_FILE
from marl.mixers import MixerInput, bind, mix
from marl.policy import Policy
from marl.registry import ENVS, MIXERS, import_all_components


@torch.no_grad()
def q_tables(run_dir: Path) -> dict[str, Any]:
    import_all_components()
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    env = ENVS.build(cfg.env, num_envs=1, seed=0)
    if not hasattr(env, "table_states"):
        raise SystemExit(f"env.name={cfg.env.name!r} is not a matrix game: no Q table to print")
    spec = env.spec
    policy, mixer = Policy(spec, cfg.agent), MIXERS.build(cfg.mixer, n_agents=spec.n_agents, state_dim=spec.state_dim)
    bind(mixer, policy)  # as the Learner does: a mixer's own agent networks exist before loading
    state = load(run_dir / CHECKPOINT_FILE)["learner"]
    policy.load_state_dict(state["policy"])
    mixer.load_state_dict(state["mixer"])
    A = spec.n_actions
    joint = torch.cartesian_prod(torch.arange(A), torch.arange(A))  # [A*A, 2]
    tables: dict[str, Any] = {}
    for label, prefix in env.table_states:
        ts = env.reset()
        hidden = policy.initial_hidden(1, torch.device("cpu"))
        last = torch.full((1, 1, spec.n_agents), A, dtype=torch.long)
        for action in prefix:
            _, hidden = policy(ts.obs.unsqueeze(1), last, hidden)
            last = torch.tensor([[action]])
            ts = env.step(torch.tensor([action]))
        q, _ = policy(ts.obs.unsqueeze(1), last, hidden)
        q = q[0, 0]  # [n, A]
        chosen = q[torch.arange(spec.n_agents), joint]  # [A*A, n]
        N = len(joint)
        out = mix(mixer, MixerInput(chosen=chosen, state=ts.state.expand(N, -1), q_all=q.expand(N, -1, -1),
                                    avail=ts.avail.expand(N, -1, -1), actions=joint,
                                    greedy=q.argmax(-1).expand(N, -1))).q_tot  # [A*A, k]
        q_tot = out.sum(-1) if out.shape[-1] > 1 else out[:, 0]
        tables[label] = {"q_tot": q_tot.view(A, A).tolist(), "q_agents": q.tolist()}
    return {"env": cfg.env.name, "mixer": cfg.mixer.name, "seed": cfg.seed, "tables": tables}


def format_tables(result: dict[str, Any]) -> str:
    lines = [f"{result['env']}  mixer={result['mixer']}  seed={result['seed']}"]
    for label, t in result["tables"].items():
        lines.append(f"\n{label}   (rows: agent 1's action, columns: agent 2's)")
        for row in t["q_tot"]:
            lines.append("  " + "  ".join(f"{v:8.2f}" for v in row))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if not (args.run_dir / CHECKPOINT_FILE).exists():
        sys.exit(f"{args.run_dir} has no {CHECKPOINT_FILE}: is it a run folder?")
    result = q_tables(args.run_dir)
    print(json.dumps(result, indent=1) if args.json else format_tables(result))


if __name__ == "__main__":
    main()
