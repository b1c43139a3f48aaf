"""How a run presents itself in W&B: name, group, tags and job type derived from its config.

``group`` is the experiment: the resolved config minus the seed and run bookkeeping, hashed, so the
seeds of one setting group together whatever order they ran in, and two settings never share a
group. The hash alone is unreadable, so the group name starts with the env, the mixer and the
sweep's overrides (minus the seed), as Hydra wrote them to ``<run>/.hydra/overrides.yaml``:

    two_step-qmix-preset=two_step_paper,t_max=600-3f9a1c2e

Why the overrides file and not a config key filled by ``${hydra:job.override_dirname}``: the file
is already in every Hydra run folder (also after a requeue or ``resume=``), it needs no schema key,
and it leaves ``hydra.job.override_dirname`` (which names the sweep's sub-folders) with the seed in
it. Runs composed without Hydra's job machinery (tests, ``marl.config.compose``) have no such
file and get ``<env>-<mixer>-<hash>``.

The report (:mod:`marl.report`) groups runs with the same :func:`experiment_key`, so a group in
the report and a group in W&B are the same set of runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from marl.config import NOT_EXPERIMENT  # keys that do not name an experiment: config.KEY_ROLES
from marl.run_folder import OVERRIDES_FILE
GROUP_MAX_LEN = 128  # W&B's limit on group names


def to_plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A plain, JSON-able dict: enums as their names, interpolations resolved where they can be.

    ``run_dir: ${hydra:runtime.output_dir}`` cannot be resolved outside a Hydra job (it is saved
    unresolved in ``config.yaml``), so bookkeeping keys are dropped before resolving when that
    fails; they are never part of the experiment anyway.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        data = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # an unresolvable interpolation (hydra:...) in a bookkeeping key
        data = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
        assert isinstance(data, dict)
        kept = OmegaConf.create({k: v for k, v in data.items() if k not in ("run_dir", "resume")})
        data = OmegaConf.to_container(kept, resolve=True, enum_to_str=True)
    assert isinstance(data, dict)
    return data  # type: ignore[return-value]


def experiment_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's config that defines the experiment (everything but ``NOT_EXPERIMENT``)."""
    return {k: v for k, v in to_plain(cfg).items() if k not in NOT_EXPERIMENT}


def experiment_key(cfg: DictConfig | Mapping[str, Any]) -> str:
    """A short hash of the config minus the seed and run bookkeeping."""
    data = experiment_config(cfg)
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep_overrides(run_dir: str | Path | None) -> list[str] | None:
    """The command-line overrides of the run in ``run_dir`` that define its experiment, sorted.

    ``None`` when Hydra wrote no overrides file there. The seed, bookkeeping keys (see
    ``NOT_EXPERIMENT``), ``hydra.*`` and the env/mixer choice (already in the name) are left out.
    """
    if run_dir is None:
        return None
    path = Path(run_dir) / OVERRIDES_FILE
    if not path.is_file():
        return None
    try:
        overrides = [str(o) for o in (OmegaConf.load(path) or [])]
    except Exception:
        return None
    kept = []
    for override in overrides:
        key = _override_key(override)
        top = key.split(".", 1)[0].split("/", 1)[0]
        if top in NOT_EXPERIMENT or top == "hydra" or key in ("env", "mixer"):
            continue
        kept.append(override)
    return sorted(kept)


def experiment_name(cfg: DictConfig, run_dir: str | Path | None = None) -> str:
    """``<env>-<mixer>[-<overrides>]-<hash>``, at most W&B's 128 characters (the hash is kept)."""
    key = experiment_key(cfg)
    overrides = sweep_overrides(run_dir)
    readable = f"{cfg.env.name}-{cfg.mixer.name}"
    if overrides:
        readable += "-" + ",".join(overrides)
    room = GROUP_MAX_LEN - len(key) - 1
    if len(readable) > room:
        readable = readable[: room - 1] + "~"
    return f"{readable}-{key}"


def _run_dir(cfg: DictConfig) -> str | None:
    try:
        return cfg.resume or cfg.run_dir
    except Exception:  # run_dir: ${hydra:...} outside a Hydra job
        return None


def wandb_identity(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """``name``, ``group``, ``tags`` and ``job_type`` for ``wandb.init``.

    ``run_dir`` defaults to the run's folder (``resume`` or ``run_dir``); the report passes the
    folder it found the run in, so that it computes the same group names as the run did.
    """
    group = cfg.logger.wandb.group or experiment_name(cfg, run_dir if run_dir is not None else _run_dir(cfg))
    return {"name": f"{cfg.env.name}-{cfg.mixer.name}-seed{cfg.seed}", "group": group,
            "tags": [cfg.env.name, cfg.mixer.name, *cfg.logger.wandb.tags], "job_type": cfg.mixer.name}
