"""The sequence GRU (hand-written backward) against PyTorch's GRUCell unrolled step by step."""

import torch
from torch import nn

from marl.agents.fast_gru import gru_sequence


def test_forward_and_gradients_match_grucell_unrolled():
    torch.manual_seed(0)
    T, N, I, H = 7, 5, 4, 6
    gru = nn.GRU(I, H).double()
    cell = nn.GRUCell(I, H).double()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in gru.state_dict().items()})
    x = torch.randn(T, N, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(T, N, H, dtype=torch.float64)

    out, hT = gru_sequence(x, h0, gru)
    loss = (out * weights).sum() + hT.square().sum()
    grads = torch.autograd.grad(loss, [x, h0, *gru.parameters()])

    h, outs = h0, []
    for t in range(T):
        h = cell(x[t], h)
        outs.append(h)
    ref_out = torch.stack(outs)
    ref_loss = (ref_out * weights).sum() + h.square().sum()
    ref_grads = torch.autograd.grad(ref_loss, [x, h0, *cell.parameters()])

    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_gradcheck():
    torch.manual_seed(1)
    gru = nn.GRU(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h: gru_sequence(x, h, gru)[0], (x, h0))


def test_no_grad_path_matches():
    gru = nn.GRU(3, 4)
    x, h0 = torch.randn(5, 2, 3), torch.zeros(2, 4)
    with torch.no_grad():
        a, _ = gru_sequence(x, h0, gru)
        b, _ = gru(x, h0.unsqueeze(0))
    torch.testing.assert_close(a, b)
