"""Branches that share their inputs run the networks once (DiffusionNFT's positive and negative targets of one
noised sample), and give the errors that separate forwards give."""

import contextlib

import torch

from genpref.adapter import Batch
from genpref.forward import branch_errors, reference_errors
from genpref.noising import Branch


class CountingAdapter:
    """predict = a fixed linear map of (x_t, t, condition); the reference is a different one; rows counted."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.policy = torch.randn(6, 6, generator=g, requires_grad=True)
        self.ref_weight = torch.randn(6, 6, generator=g)
        self.in_reference = False
        self.rows = {"policy": 0, "reference": 0}

    @contextlib.contextmanager
    def reference(self):
        self.in_reference = True
        try:
            yield
        finally:
            self.in_reference = False

    def predict(self, x_t, t, batch, guidance=1.0):
        w = self.ref_weight if self.in_reference else self.policy
        self.rows["reference" if self.in_reference else "policy"] += x_t.shape[0]
        return x_t @ w + t[:, None].float() / 1000 + batch.cond["c"]


def branches(mask: bool):
    g = torch.Generator().manual_seed(1)
    b = 4
    batch = Batch(None, {"c": torch.randn(b, 6, generator=g)}, (torch.rand(b, 6, generator=g) > 0.3).float() if mask else None)
    x_t, t = torch.randn(b, 6, generator=g), torch.randint(0, 1000, (b,), generator=g)
    anchor = Batch(None, {"c": torch.randn(b, 6, generator=g)}, torch.ones(b, 6) if mask else None)
    return {
        "pos": Branch(x_t, t, torch.randn(b, 6, generator=g), batch),
        "neg": Branch(x_t, t, torch.randn(b, 6, generator=g), batch),  # same inputs, another target
        "w": Branch(torch.randn(b, 6, generator=g), torch.randint(0, 1000, (b,), generator=g), torch.randn(b, 6, generator=g), anchor),
    }


def separately(adapter, named: dict, reference: bool) -> dict:
    """Each branch through its own forward, the error written out: the independent computation."""
    out = {}
    for name, br in named.items():
        with contextlib.ExitStack() as stack:
            if reference:
                stack.enter_context(adapter.reference())
            pred = adapter.predict(br.x_t, br.t, br.batch)
        sq = (pred - br.target) ** 2
        m = br.batch.mask
        out[name] = sq.mean(1) if m is None else (sq * m).sum(1) / m.sum(1).clamp_min(1)
    return out


def test_shared_inputs_are_computed_once_with_the_same_errors():
    for mask in (False, True):
        adapter = CountingAdapter()
        named = branches(mask)
        err, ref = branch_errors(adapter, named, need_reference=True)
        assert adapter.rows == {"policy": 8, "reference": 8}  # pos/neg share 4 rows; the anchor adds 4
        want, want_ref = separately(adapter, named, False), separately(adapter, named, True)
        for n in named:
            torch.testing.assert_close(err[n], want[n])
            torch.testing.assert_close(ref[n], want_ref[n])
        # the gradient flows to the one shared forward from both targets
        (err["pos"].sum() + err["neg"].sum()).backward()
        assert adapter.policy.grad is not None and adapter.policy.grad.abs().sum() > 0
        pre = reference_errors(adapter, named)  # train.precompute_reference's path shares the same way
        for n in named:
            torch.testing.assert_close(pre[n], want_ref[n])


def test_equal_but_distinct_inputs_are_not_merged():
    adapter = CountingAdapter()
    named = branches(False)
    named["neg"] = Branch(named["pos"].x_t.clone(), named["pos"].t, named["neg"].target, named["pos"].batch)
    branch_errors(adapter, named, need_reference=False)
    assert adapter.rows["policy"] == 12  # sharing is by identity: a copy is another input
