"""Flows have exact inverses and exact log-determinants (checked against autograd in float64)."""

from __future__ import annotations

import pytest
import torch

from flrp.nn.flows import ConditionalGaussianFlow, ConditionalRealNVP, standard_normal_log_prob


def _perturbed(flow: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    # Couplings start as the identity (zero last layer); randomise them so the test means something.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_realnvp_inverse_is_exact(dim):
    flow = _perturbed(ConditionalRealNVP(dim, cond_dim=4, layers=4, hidden=(32, 32)).double())
    u = torch.randn(64, dim, dtype=torch.float64)
    c = torch.randn(64, 4, dtype=torch.float64)
    z, ld_f = flow(u, c)
    u_back, ld_i = flow.inverse(z, c)
    assert not torch.allclose(z, u)  # the flow is not the identity
    torch.testing.assert_close(u_back, u, atol=1e-10, rtol=0)
    torch.testing.assert_close(ld_f, -ld_i, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dim", [2, 3])
def test_realnvp_logdet_matches_autograd_jacobian(dim):
    flow = _perturbed(ConditionalRealNVP(dim, cond_dim=2, layers=3, hidden=(16,)).double())
    c = torch.randn(1, 2, dtype=torch.float64)
    for _ in range(5):
        u = torch.randn(1, dim, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda x: flow(x[None], c)[0][0], u[0])
        _, ld = flow(u, c)
        torch.testing.assert_close(ld[0], torch.linalg.slogdet(jac).logabsdet, atol=1e-9, rtol=0)
        jac_inv = torch.autograd.functional.jacobian(lambda x: flow.inverse(x[None], c)[0][0], u[0])
        _, ld_inv = flow.inverse(u, c)
        torch.testing.assert_close(ld_inv[0], torch.linalg.slogdet(jac_inv).logabsdet, atol=1e-9, rtol=0)


def test_log_prob_integrates_to_one_in_2d():
    flow = _perturbed(ConditionalRealNVP(2, cond_dim=1, layers=2, hidden=(16,)).double(), scale=0.1)
    g = torch.linspace(-15, 15, 751, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    z = torch.stack([xx.flatten(), yy.flatten()], -1)
    c = torch.full((z.shape[0], 1), 0.3, dtype=torch.float64)
    with torch.no_grad():
        mass = flow.log_prob(z, c).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(mass.item() - 1.0) < 1e-3


def test_zero_layers_is_standard_normal():
    flow = ConditionalRealNVP(3, cond_dim=2, layers=0)
    z = torch.randn(10, 3)
    c = torch.randn(10, 2)
    torch.testing.assert_close(flow.log_prob(z, c), standard_normal_log_prob(z))
    assert list(flow.parameters()) == []


def test_posterior_log_prob_is_exact_density():
    post = _perturbed(ConditionalGaussianFlow(2, cond_dim=3, layers=2, hidden=(16,)).double())
    c = torch.randn(1, 3, dtype=torch.float64)
    eps = torch.randn(1, 2, dtype=torch.float64)
    z, log_q = post.rsample_and_log_prob(c, eps)
    # Change of variables by hand: eps -> z has Jacobian dz/deps; log q = log N(eps) - log|det|.
    jac = torch.autograd.functional.jacobian(lambda e: post.rsample_and_log_prob(c, e[None])[0][0], eps[0])
    expected = standard_normal_log_prob(eps)[0] - torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(log_q[0], expected, atol=1e-9, rtol=0)


def test_gradients_reach_every_parameter():
    flow = ConditionalRealNVP(4, cond_dim=2, layers=4, hidden=(16, 16))
    post = ConditionalGaussianFlow(4, cond_dim=2, layers=2, hidden=(16,))
    c = torch.randn(32, 2)
    z, log_q = post.rsample_and_log_prob(c, torch.randn(32, 4))
    (flow.log_prob(z, c).sum() + log_q.sum()).backward()
    # zero-initialised last layers get gradient; earlier layers get it after one step, so check last
    for name, p in [*flow.named_parameters(), *post.named_parameters()]:
        if name.endswith(("net.4.weight", "net.4.bias", "net.2.weight", "net.2.bias")) or "base" in name:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_scale_is_softly_bounded():
    flow = ConditionalRealNVP(2, cond_dim=1, layers=1, hidden=(8,), scale_bound=2.0)
    with torch.no_grad():
        for p in flow.parameters():
            p.fill_(50.0)
    _, ld = flow(torch.ones(4, 2), torch.ones(4, 1))
    assert (ld.abs() <= 2.0 + 1e-6).all()
