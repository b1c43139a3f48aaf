import torch

from marl.buffers import allocate
from marl.buffers.episode import EpisodeBuffer
from marl.envs.base import EnvSpec

SPEC = EnvSpec(n_agents=2, obs_dim=3, state_dim=4, n_actions=5, episode_limit=6)


def episodes(markers: list[int], length: int = 6):
    ep = allocate(SPEC, len(markers))
    for i, m in enumerate(markers):
        ep["reward"][i, :length] = float(m)
        ep["filled"][i, :length] = True
        ep["obs"][i] = float(m)
    return ep


def test_wrap_around_keeps_the_newest_episodes():
    buf = EpisodeBuffer(SPEC, capacity=3)
    buf.insert(episodes([1, 2]))
    buf.insert(episodes([3, 4]))  # wraps: 4 overwrites 1
    assert buf.size == 3 and buf.pos == 1
    assert sorted(buf.data["reward"][:, 0].tolist()) == [2.0, 3.0, 4.0]
    buf.insert(episodes([5, 6, 7, 8]))  # more than capacity: only the newest 3 fit
    assert sorted(buf.data["reward"][:, 0].tolist()) == [6.0, 7.0, 8.0]
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        seen |= set(buf.sample(2, g)["reward"][:, 0].tolist())
    assert seen == {6.0, 7.0, 8.0}


def test_sample_trims_time_to_the_longest_episode_and_draws_distinct_episodes():
    buf = EpisodeBuffer(SPEC, capacity=10)
    buf.insert(episodes([1, 2, 3], length=2))
    batch = buf.sample(3, torch.Generator().manual_seed(1))
    assert batch["reward"].shape == (3, 2)
    assert batch["obs"].shape == (3, 3, 2, 3)  # T+1 observation slots
    assert sorted(batch["reward"][:, 0].tolist()) == [1.0, 2.0, 3.0]


def test_state_dict_round_trip_preserves_sampling():
    buf = EpisodeBuffer(SPEC, capacity=4)
    buf.insert(episodes([1, 2, 3, 4, 5, 6]))
    copy = EpisodeBuffer(SPEC, capacity=4)
    copy.load_state_dict(buf.state_dict())
    assert (copy.pos, copy.size) == (buf.pos, buf.size)
    a = buf.sample(2, torch.Generator().manual_seed(3))
    b = copy.sample(2, torch.Generator().manual_seed(3))
    for k in a:
        assert torch.equal(a[k], b[k])
