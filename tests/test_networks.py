"""Networks: every registered builder yields the right output shape from the declared defaults."""

from __future__ import annotations

import pytest
import torch

from text_recognizer.networks import NETWORKS, build_network


@pytest.mark.parametrize("name", sorted(n for n, e in NETWORKS.items() if e.kind == "characters"))
@pytest.mark.parametrize("shape", [(28, 28), (32, 40)])
def test_defaults_build_and_forward(name, shape):
    defaults = {k: p.default for k, p in NETWORKS[name].args.items()}
    net = build_network(name, shape, (36,), **defaults)
    assert net(torch.rand(3, *shape)).shape == (3, 36)


def test_resnet34_layout():
    net = build_network("resnet", (28, 28), (36,), layers=[3, 4, 6, 3], base_channels=16)
    assert len(net.stages) == 16  # 3 + 4 + 6 + 3 basic blocks
    assert net(torch.rand(2, 28, 28)).shape == (2, 36)


def test_mlp_layers_follow_args():
    net = build_network("mlp", (28, 28), (10,), num_layers=4, layer_size=32, dropout_amount=0.0)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [32, 32, 32, 32, 10]


def test_lenet_refuses_too_small_inputs():
    with pytest.raises(ValueError, match="too small"):
        build_network("lenet", (5, 5), (10,), conv_channels=[8, 8], fc_size=8, dropout_amount=0.0)
