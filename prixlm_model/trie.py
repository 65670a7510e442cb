"""A compact tensor trie over the tokenized entity names of one language.

Why: constrained decoding (Algorithm 1) asks, for every hypothesis at every step, which tokens
may follow it. The released code keeps a dict from every name prefix (a tuple) to a list of next
tokens, which for English's 2M entities costs many gigabytes (GENRE's dict trie hit 8.5 GB for
5M titles). Here the trie is four flat integer arrays, built with numpy in a few passes, and
``allowed`` answers for a whole batch of hypotheses with a handful of tensor operations.

Layout (CSR, nodes numbered breadth first, children of a node in ascending token order):

- ``child_offsets[n] .. child_offsets[n + 1]``: the edges leaving node ``n``;
- ``child_tokens[e]``: the token of edge ``e``. The node an edge leads to is ``e + 1``: every
  node but the root has exactly one incoming edge, and breadth-first numbering makes edge ``e``
  create node ``e + 1``, so no child-id array is stored;
- every name ends in ``[EOS]``, so a name that is a prefix of another ("Paris" and
  "Paris Saint-Germain") ends at its own ``[EOS]`` child, and the nodes reached by ``[EOS]``
  (the leaves) are exactly the childless nodes. A leaf is named by its node id;
- ``entity_leaf[i]``: the leaf of entity ``i``. Several entities (IRIs) with one surface name
  share one leaf; the model cannot tell them apart, so decoding ranks leaves, and evaluation
  counts the gold as found when its leaf is (see ``prixlm_model.evaluation``). The reverse map
  (leaf -> entities) is derived on first use.

Per entity that costs 8 bytes per trie node it adds (its ``[EOS]`` node included) and 4 bytes
for ``entity_leaf``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cached_property

import numpy as np
import torch


class EntityTrie:
    """Tokenized entity names (each followed by ``end_id``) as CSR arrays; build with ``build``."""

    def __init__(
        self,
        child_offsets: np.ndarray,
        child_tokens: np.ndarray,
        entity_leaf: np.ndarray,
        level_offsets: np.ndarray,
        end_id: int,
    ) -> None:
        if len(child_offsets) != len(child_tokens) + 2:
            raise ValueError("child_offsets must have one entry per node plus one, and nodes = edges + 1")
        self.end_id = end_id
        self.child_offsets = torch.from_numpy(child_offsets)
        self.child_tokens = torch.from_numpy(child_tokens)
        self.entity_leaf = torch.from_numpy(entity_leaf)
        self.level_offsets = level_offsets.tolist()  # nodes of depth d: level_offsets[d] .. level_offsets[d + 1]

    @classmethod
    def build(cls, names: Sequence[Sequence[int]], end_id: int) -> EntityTrie:
        """The trie of ``names`` (token ids without ``[EOS]``); entity ``i`` is ``names[i]``.

        Rows are padded into one matrix, sorted as big-endian byte strings (lexicographic by
        token), and each depth's new nodes are the rows whose prefix differs from the row above.
        """
        count = len(names)
        if count == 0:
            raise ValueError("an entity trie needs at least one name")
        lengths = np.fromiter((len(name) for name in names), np.int64, count) + 1
        width = int(lengths.max())
        # Keys are token + 1, so the padding (0) sorts before every token and a row's bytes
        # compare like its token list.
        keys = np.zeros((count, width), dtype=">u4")
        keys[np.arange(width) < (lengths - 1)[:, None]] = np.fromiter(itertools.chain.from_iterable(names), np.int64) + 1
        keys[np.arange(count), lengths - 1] = end_id + 1
        order = np.argsort(keys.view(f"V{4 * width}").ravel(), kind="stable")
        keys, lengths = keys[order], lengths[order]

        differs = np.ones((count, width), dtype=bool)
        differs[1:] = keys[1:] != keys[:-1]
        first_new = np.where(differs.any(axis=1), differs.argmax(axis=1), width)
        del differs

        tokens, parents, node_at_depth = [], [], np.zeros(count, np.int64)
        next_node, leaf_node, level_offsets = 1, np.zeros(count, np.int64), [0, 1]
        for depth in range(width):
            is_new = (first_new <= depth) & (depth < lengths)
            new_count = int(is_new.sum())
            parent = node_at_depth
            node_at_depth = next_node + np.cumsum(is_new) - 1  # the latest new node at or above each row
            tokens.append(keys[is_new, depth].astype(np.int64) - 1)
            parents.append(parent[is_new])
            ends_here = lengths - 1 == depth
            leaf_node[ends_here] = node_at_depth[ends_here]
            next_node += new_count
            level_offsets.append(next_node)
        child_tokens = np.concatenate(tokens)
        edge_parents = np.concatenate(parents)  # non-decreasing: breadth first, rows in sorted order
        node_count = next_node
        index_type = np.int32 if node_count < 2**31 else np.int64
        child_offsets = np.zeros(node_count + 1, np.int64)
        np.cumsum(np.bincount(edge_parents, minlength=node_count), out=child_offsets[1:])

        entity_leaf = np.empty(count, np.int64)
        entity_leaf[order] = leaf_node
        return cls(
            child_offsets.astype(index_type),
            child_tokens.astype(np.int32),
            entity_leaf.astype(index_type),
            np.asarray(level_offsets),
            end_id,
        )

    def to(self, device: torch.device | str) -> EntityTrie:
        """This trie with its search arrays on ``device`` (the decoder's), so ``allowed`` runs where the model does."""
        device = torch.device(device)
        if self.child_offsets.device == device:
            return self
        moved = object.__new__(EntityTrie)
        moved.end_id, moved.level_offsets = self.end_id, self.level_offsets
        moved.child_offsets, moved.child_tokens = self.child_offsets.to(device), self.child_tokens.to(device)
        moved.entity_leaf = self.entity_leaf  # entity bookkeeping stays on the CPU: it is read per result, not per step
        return moved

    @property
    def device(self) -> torch.device:
        return self.child_offsets.device

    @property
    def node_count(self) -> int:
        return len(self.child_offsets) - 1

    @cached_property
    def leaves(self) -> torch.Tensor:
        """Every leaf (childless node), ascending."""
        return (torch.diff(self.child_offsets) == 0).nonzero().squeeze(1)

    @property
    def leaf_count(self) -> int:
        return len(self.leaves)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored arrays (the lazily derived reverse map and filter arrays excluded)."""
        arrays = (self.child_offsets, self.child_tokens, self.entity_leaf)
        return sum(array.numel() * array.element_size() for array in arrays)

    def allowed(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every allowed continuation of a batch of nodes, flattened.

        ``nodes``: (H,) node ids. Returns ``(row, token, child)``, each (E,): edge ``j`` leaves
        ``nodes[row[j]]`` with ``token[j]`` and reaches ``child[j]``; rows appear in order.
        """
        nodes = nodes.long()
        starts = self.child_offsets[nodes].long()
        counts = self.child_offsets[nodes + 1].long() - starts
        row = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), counts)
        segment_start = torch.cumsum(counts, 0) - counts
        edges = torch.arange(int(counts.sum()), device=nodes.device) - segment_start[row] + starts[row]
        return row, self.child_tokens[edges].long(), edges + 1

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        """Whether each node completes a name (was reached by ``[EOS]``): leaves have no children."""
        nodes = nodes.long()
        return self.child_offsets[nodes + 1] == self.child_offsets[nodes]

    @cached_property
    def _entities_by_leaf(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Entity numbers sorted by leaf, and their leaves: the reverse of ``entity_leaf``."""
        order = torch.argsort(self.entity_leaf, stable=True)
        return order, self.entity_leaf[order]

    def entities_of_leaf(self, leaf: int) -> list[int]:
        """The entities whose name ends at ``leaf``."""
        order, sorted_leaves = self._entities_by_leaf
        key = torch.tensor([leaf], dtype=sorted_leaves.dtype)
        start, stop = int(torch.searchsorted(sorted_leaves, key)), int(torch.searchsorted(sorted_leaves, key, right=True))
        return order[start:stop].tolist()

    def walk(self, tokens: Sequence[int]) -> int:
        """The node reached from the root by ``tokens``, or -1 if no name starts that way."""
        node = 0
        for token in tokens:
            start, stop = int(self.child_offsets[node]), int(self.child_offsets[node + 1])
            children = self.child_tokens[start:stop]
            at = int(torch.searchsorted(children, torch.tensor(token, dtype=children.dtype)))
            if at == stop - start or int(children[at]) != token:
                return -1
            node = start + at + 1
        return node

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (GENRE's ``get``); empty for a non-prefix or a full name."""
        node = self.walk(prefix)
        return [] if node < 0 else self.child_tokens[self.child_offsets[node] : self.child_offsets[node + 1]].tolist()

    def lookup(self, name: Sequence[int]) -> list[int]:
        """The entities named exactly ``name`` (token ids without ``[EOS]``); empty if none."""
        node = self.walk([*name, self.end_id])
        return [] if node < 0 else self.entities_of_leaf(node)

    def leaf_tokens(self, leaf: int) -> list[int]:
        """The token ids spelling ``leaf``'s name, ``[EOS]`` included (node ``n`` is reached by token ``n - 1``)."""
        tokens, node = [], leaf
        while node > 0:
            tokens.append(int(self.child_tokens[node - 1]))
            node = int(self._parents[node])
        return tokens[::-1]

    @cached_property
    def _parents(self) -> torch.Tensor:
        """Parent of each node (root: -1); built on first use (in-search filtering, ``leaf_tokens``)."""
        edges = torch.arange(self.node_count - 1, dtype=self.child_offsets.dtype)
        parents = torch.searchsorted(self.child_offsets, edges, right=True) - 1
        return torch.cat([torch.tensor([-1]), parents.long()])

    @cached_property
    def _leaves_below(self) -> torch.Tensor:
        """Number of leaves in each node's subtree, summed level by level from the deepest up."""
        counts = torch.zeros(self.node_count, dtype=torch.long)
        counts[self.leaves] = 1
        for start, stop in reversed(list(itertools.pairwise(self.level_offsets))[1:]):
            counts.index_add_(0, self._parents[start:stop], counts[start:stop].clone())
        return counts

    def dead_nodes(self, banned_leaves: Sequence[int]) -> torch.Tensor:
        """Nodes every one of whose names is banned: the search must not enter them.

        Used to filter inside the search: with the banned leaves removed from the candidate set,
        a prefix that can only complete to them "cannot expand to an entity" (Algorithm 1).
        """
        if not banned_leaves:
            return torch.empty(0, dtype=torch.long)
        banned_below: dict[int, int] = {}
        parents = self._parents
        for node in banned_leaves:
            while node > 0:
                banned_below[node] = banned_below.get(node, 0) + 1
                node = int(parents[node])
        nodes = torch.tensor(list(banned_below))
        counts = torch.tensor(list(banned_below.values()))
        return nodes[counts == self._leaves_below[nodes]].sort().values
