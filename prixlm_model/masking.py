"""The paper's attention mask M (section 2.2) as the 4D mask transformers takes as given.

Why a 4D mask: ``XLMRobertaForCausalLM`` adds its own causal mask only to a 2D mask; a
``(B, 1, L, L)`` mask is used as is, so the prefix can be bidirectional while the object is
generated left to right. For query position i and key position j of a row whose object starts
at ``s`` (one after ``[O]``) and whose length is ``n``:

- a prefix token (i < s) sees every prefix token (j < s) and no object token;
- an object token (i >= s) sees the prefix and the object tokens at or before it (j <= i);
- no token sees padding (j >= n). Padding rows fall under the object rule and so always see
  the prefix: a row with nothing to attend to would turn softmax into NaN under sdpa.

Under sdpa a bool mask (True = attend) is cheapest; eager attention only understands an additive
float mask in the model's dtype (a bool mask is silently wrong there), hence both forms.
"""

from __future__ import annotations

import torch


def prefix_object_mask(
    object_start: torch.Tensor,
    lengths: torch.Tensor,
    max_length: int | None = None,
    *,
    causal: bool = False,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """The mask M for a batch, shape ``(B, 1, L, L)`` with ``L = max_length or lengths.max()``.

    ``object_start`` and ``lengths`` are ``(B,)`` integer tensors. ``causal=True`` gives plain
    causal attention (every token sees the tokens at or before it), padding merged the same way.
    ``dtype=torch.bool`` returns True where attention is allowed; a floating dtype returns the
    additive form: 0 where allowed, the dtype's most negative value elsewhere.
    """
    length = int(max_length if max_length is not None else lengths.max())
    positions = torch.arange(length, device=lengths.device)
    query = positions.view(1, length, 1)
    key = positions.view(1, 1, length)
    at_or_before = key <= query
    if causal:
        allowed = at_or_before
    else:
        start = object_start.view(-1, 1, 1)
        allowed = (key < start) | ((query >= start) & at_or_before)
    allowed = (allowed & (key < lengths.view(-1, 1, 1))).unsqueeze(1)
    if dtype == torch.bool:
        return allowed
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return additive.masked_fill_(~allowed, torch.finfo(dtype).min)
