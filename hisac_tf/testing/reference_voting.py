"""Plain numpy reference for HiSAC's hierarchical voting (docs/design.md §2.2).

Written on purpose as a straightforward per-user loop over Python dicts, so
that it shares no code or trick with the vectorised layer
`hisac_tf.layers.hierarchical_voting.HierarchicalVoting`.

For each user:
  1. votes[path] for every SID prefix path (c_1..c_l), l = 1..L: the number
     of the user's valid items whose SID starts with that path;
  2. top-down: the root's children with votes, ranked by (-votes, code),
     the first k_1 kept; under every kept node of level l-1 its children
     ranked the same way, the first k_l kept;
  3. the kept leaves sorted by (-votes, SID path), the first A kept;
  4. w_a = v_a^(1/T) / sum_b v_b^(1/T) over the kept agents.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def vote_one_user(
    sids: np.ndarray,
    mask: np.ndarray,
    top_k: Sequence[int],
    num_agents: int,
) -> list[tuple[tuple[int, ...], int]]:
    """One user's agents as a list of (SID path, votes), best first.

    sids: [N, L] ints; mask: [N] bools.
    """
    num_levels = sids.shape[1]
    votes: dict[tuple[int, ...], int] = {}
    for n in range(sids.shape[0]):
        if not mask[n]:
            continue
        for level in range(1, num_levels + 1):
            path = tuple(int(c) for c in sids[n, :level])
            votes[path] = votes.get(path, 0) + 1

    kept_parents: list[tuple[int, ...]] = [()]
    for level in range(1, num_levels + 1):
        kept_here: list[tuple[int, ...]] = []
        for parent in kept_parents:
            children = [
                path for path in votes
                if len(path) == level and path[:-1] == parent
            ]
            children.sort(key=lambda path: (-votes[path], path[-1]))
            kept_here.extend(children[: top_k[level - 1]])
        kept_parents = kept_here

    leaves = sorted(kept_parents, key=lambda path: (-votes[path], path))
    return [(path, votes[path]) for path in leaves[:num_agents]]


def hierarchical_voting_reference(
    sids: np.ndarray,
    mask: np.ndarray,
    top_k: Sequence[int],
    num_agents: int,
    temperature: float = 1.0,
) -> dict[str, np.ndarray]:
    """The layer's outputs for a batch, computed user by user.

    sids: [B, N, L] ints; mask: [B, N] bools. Returns the same dict as the
    layer: agent_sids [B, A, L] int32, agent_votes [B, A] float32,
    agent_weights [B, A] float32, agent_mask [B, A] bool, num_active [B]
    int32.
    """
    sids = np.asarray(sids)
    mask = np.asarray(mask, dtype=bool)
    batch, _, num_levels = sids.shape
    out = {
        "agent_sids": np.zeros((batch, num_agents, num_levels), np.int32),
        "agent_votes": np.zeros((batch, num_agents), np.float32),
        "agent_weights": np.zeros((batch, num_agents), np.float32),
        "agent_mask": np.zeros((batch, num_agents), bool),
        "num_active": np.zeros((batch,), np.int32),
    }
    for b in range(batch):
        agents = vote_one_user(sids[b], mask[b], top_k, num_agents)
        if not agents:
            continue
        powered = np.array(
            [float(v) ** (1.0 / temperature) for _, v in agents], np.float64
        )
        weights = powered / powered.sum()
        for a, (path, v) in enumerate(agents):
            out["agent_sids"][b, a] = path
            out["agent_votes"][b, a] = v
            out["agent_weights"][b, a] = weights[a]
            out["agent_mask"][b, a] = True
        out["num_active"][b] = len(agents)
    return out
