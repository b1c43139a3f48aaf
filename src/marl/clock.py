"""Counters and schedules. Time has units (docs/architecture.md, invariant 2): every schedule names one."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from marl.config import Unit


@dataclass
class Clock:
    """The three separate counters of a run; all three are logged with every metric."""

    env_steps: int = 0
    episodes: int = 0
    grad_steps: int = 0

    def __getitem__(self, unit: Unit | str) -> int:
        return int(getattr(self, Unit(unit).value))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Every:
    """Fires when ``clock[unit]`` reaches the next multiple of ``interval``.

    Fires at most once per call even if several multiples were skipped (a batched env step can
    jump past one), and then waits for the next multiple after the current count.
    """

    def __init__(self, interval: int, unit: Unit | str) -> None:
        self.interval = int(interval)
        self.unit = Unit(unit)
        self.next = self.interval

    def due(self, clock: Clock) -> bool:
        now = clock[self.unit]
        if now < self.next:
            return False
        self.next = (now // self.interval + 1) * self.interval
        return True

    def state_dict(self) -> dict[str, int]:
        return {"next": self.next}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next = int(state["next"])


class LinearSchedule:
    """Linear from ``start`` to ``finish`` over ``anneal`` units of ``unit``, then constant."""

    def __init__(self, start: float, finish: float, anneal: int, unit: Unit | str) -> None:
        self.start, self.finish, self.anneal, self.unit = start, finish, int(anneal), Unit(unit)

    def __call__(self, clock: Clock) -> float:
        frac = min(1.0, clock[self.unit] / self.anneal)
        return self.start + frac * (self.finish - self.start)
