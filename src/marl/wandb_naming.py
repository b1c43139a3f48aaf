"""How a run presents itself in W&B: name, group, tags and job type derived from its config.

``group`` is the experiment: the resolved config minus the seed (and paths), hashed, so seeds of
one setting group together whatever order they ran in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

NOT_EXPERIMENT = ("seed", "run_dir", "resume", "logger", "device", "threads")


def experiment_key(cfg: DictConfig) -> str:
    """A short hash of the config minus the seed and run bookkeeping."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data = {k: v for k, v in data.items() if k not in NOT_EXPERIMENT}
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def wandb_identity(cfg: DictConfig) -> dict[str, Any]:
    group = cfg.logger.wandb.group or f"{cfg.env.name}-{cfg.mixer.name}-{experiment_key(cfg)}"
    return {"name": f"{cfg.env.name}-{cfg.mixer.name}-seed{cfg.seed}", "group": group,
            "tags": [cfg.env.name, cfg.mixer.name, *cfg.logger.wandb.tags], "job_type": cfg.mixer.name}
