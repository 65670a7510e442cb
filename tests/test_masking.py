"""The attention mask M of paper section 2.2, entry by entry."""

from __future__ import annotations

import torch

from prixlm_model.masking import prefix_object_mask


def grid(text: str) -> torch.Tensor:
    """A mask written as rows of 0/1 (row = query position, column = key position)."""
    return torch.tensor([[c == "1" for c in row] for row in text.split()])


# <s> [S] Paris </s> </s> [P] country </s> </s> [O] | France [EOS]: the object starts at 10.
PAPER_M = grid(
    """
    111111111100
    111111111100
    111111111100
    111111111100
    111111111100
    111111111100
    111111111100
    111111111100
    111111111100
    111111111100
    111111111110
    111111111111
    """
)


def test_mask_equals_the_papers_m_for_a_triple() -> None:
    mask = prefix_object_mask(torch.tensor([10]), torch.tensor([12]))
    assert mask.shape == (1, 1, 12, 12) and mask.dtype == torch.bool
    assert torch.equal(mask[0, 0], PAPER_M)


def test_padding_is_never_attended_and_padding_rows_are_not_empty() -> None:
    # length 6, object from 4, padded to 8
    expected = grid(
        """
        11110000
        11110000
        11110000
        11110000
        11111000
        11111100
        11111100
        11111100
        """
    )
    mask = prefix_object_mask(torch.tensor([10, 4]), torch.tensor([12, 6]))
    assert torch.equal(mask[1, 0, :8, :8], expected) and not mask[1, 0, :, 6:].any()
    assert mask.any(dim=-1).all()  # no row without a key: sdpa would give NaN


def test_causal_switch() -> None:
    mask = prefix_object_mask(torch.tensor([2, 2]), torch.tensor([4, 3]), causal=True)
    assert torch.equal(mask[0, 0], torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    assert torch.equal(mask[1, 0], torch.tril(torch.ones(4, 4, dtype=torch.bool)) & torch.tensor([True, True, True, False]))


def test_additive_form_in_the_model_dtype() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        additive = prefix_object_mask(torch.tensor([10]), torch.tensor([12]), dtype=dtype)
        assert additive.dtype == dtype
        assert torch.equal(additive[0, 0] == 0, PAPER_M)
        assert (additive[0, 0][~PAPER_M] == torch.finfo(dtype).min).all()
