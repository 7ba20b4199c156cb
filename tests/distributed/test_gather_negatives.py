"""In-batch softmax under DDP with gathered negatives: every rank's items are candidates."""

import torch
import torch.nn.functional as F

from ddp_workers import in_batch_loss_with_gathered_negatives, spawn


def reference_loss(rows_of_rank: slice, items: torch.Tensor | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    users = F.normalize(torch.randn(5, 4, generator=generator), dim=1)
    default_items = F.normalize(torch.randn(5, 4, generator=generator), dim=1)
    items = default_items if items is None else items
    rows = torch.tensor([7, 8, 9, 8, 10])
    log_q = torch.log(torch.tensor([1, 2, 1, 2, 1.0]) / 5.0)  # frequencies of rows 7, 8, 9, 8, 10
    logits = users[rows_of_rank] @ items.T / 0.5 - log_q  # (B, 5): all 5 items are candidates
    targets = torch.arange(5)[rows_of_rank]
    hits = rows[rows_of_rank].unsqueeze(1) == rows.unsqueeze(0)
    hits[torch.arange(len(targets)), targets] = False
    logits = logits.masked_fill(hits, torch.finfo(logits.dtype).min)
    return F.cross_entropy(logits, targets)


def test_each_rank_scores_against_every_ranks_items(tmp_path):
    spawn(in_batch_loss_with_gathered_negatives, str(tmp_path))
    for rank, rows in ((0, slice(0, 3)), (1, slice(3, 5))):
        result = torch.load(tmp_path / f"gather{rank}.pt")
        torch.testing.assert_close(result["loss"], reference_loss(rows), rtol=1e-5, atol=1e-6)
    # each rank's item gradient sums both ranks' losses (the all_gather backward)
    generator = torch.Generator().manual_seed(0)
    torch.randn(5, 4, generator=generator)
    items = F.normalize(torch.randn(5, 4, generator=generator), dim=1).requires_grad_(True)
    (reference_loss(slice(0, 3), items) + reference_loss(slice(3, 5), items)).backward()
    torch.testing.assert_close(torch.load(tmp_path / "gather0.pt")["grad"], items.grad[0:3], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.load(tmp_path / "gather1.pt")["grad"], items.grad[3:5], rtol=1e-5, atol=1e-6)
