"""Readable names for the report's experiments and envs: what differs between them, not their hash.

An experiment is keyed by its config minus the seed (:func:`marl.wandb_naming.experiment_key`), which
no reader can decode; its label is the mixer plus the config keys whose values differ between the
compared experiments, so a sweep over ``learner.lr`` reads ``qmix (learner.lr=0.001)``.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from marl.config import flatten


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Dotted keys whose values are not the same in all ``configs`` (in config order)."""
    flats = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]


def group_labels(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Readable names for experiments: the mixer, then what else differs between them.

    Keys inside the ``mixer`` subtree are shown only where two experiments share a mixer name (a
    mixer's own defaults differ from another mixer's without being a choice anyone made).
    """
    diff = differing_keys(list(configs.values()))
    mixers = {k: str(flatten(c).get("mixer.name", "?")) for k, c in configs.items()}
    shared = {m for m in mixers.values() if list(mixers.values()).count(m) > 1}
    labels = {}
    for key, cfg in configs.items():
        flat = flatten(cfg)
        extra = [f"{k}={flat.get(k)}" for k in diff if k != "mixer.name"
                 and (not k.startswith("mixer.") or mixers[key] in shared)]
        labels[key] = mixers[key] + (f" ({', '.join(extra)})" if extra else "")
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {k: (f"{v} #{k}" if seen[v] > 1 else v) for k, v in labels.items()}


def env_labels(envs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``env.name``, plus the env settings that differ when two tables share a name."""
    names = {k: str((v or {}).get("name", "env")) for k, v in envs.items()}
    labels = {}
    for key, name in names.items():
        same = [envs[k] for k, n in names.items() if n == name]
        diff = [d for d in differing_keys(same) if d != "name"] if len(same) > 1 else []
        flat = flatten(envs[key] or {})
        labels[key] = name + (f" ({', '.join(f'{d}={flat.get(d)}' for d in diff)})" if diff else "")
    return labels
