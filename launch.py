"""Hydra entry point: ``python launch.py [-m] key=value ...``.

``seed=0-9`` is sugar for Hydra's ``seed=range(0,10)``: any ``key=A-B`` with integers A <= B
becomes an inclusive range (Hydra alone would read it as the string "0-9").
"""

from __future__ import annotations

import re
import sys

import hydra
from omegaconf import DictConfig

from marl.errors import ConfigError
from marl.registry import import_all_components

INT_RANGE = re.compile(r"^([\w.+~/@-]*?[\w.]+)=(\d+)-(\d+)$")


def expand_int_ranges(args: list[str]) -> list[str]:
    """Turn ``key=A-B`` into ``key=range(A,B+1)``; leave every other argument as it is."""
    out = []
    for arg in args:
        m = INT_RANGE.match(arg)
        if m and int(m.group(2)) <= int(m.group(3)):
            key, a, b = m.group(1), int(m.group(2)), int(m.group(3))
            arg = f"{key}=range({a},{b + 1})"
        out.append(arg)
    return out


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from marl import experiment

    try:
        result = experiment.run(cfg)
    except ConfigError as exc:
        print(f"Config error: {exc}", file=sys.stderr)
        sys.exit(2)
    return result.get("eval/return_mean")


if __name__ == "__main__":
    import_all_components()
    sys.argv = [sys.argv[0], *expand_int_ranges(sys.argv[1:])]
    main()
