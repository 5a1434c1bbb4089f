"""The image_diffusion family as the API sees it without torch: the U-Net's shapes counted from
its diffusers arguments, and the work of one pass, against the network diffusers builds."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from app.families.builtin import image_diffusion_positions_per_image, parameter_count, unet_kwargs
from app.families.registry import FamilyParamsError, get_family

CONFIGS = [
    {},
    {"conditional": True},
    {"image_size": 16, "channels": 3, "block_out_channels": [16, 32, 48], "layers_per_block": 2, "conditional": True},
    {"image_size": 8, "block_out_channels": [32]},
]


@pytest.mark.parametrize("params", CONFIGS, ids=["default", "conditional", "three-levels-rgb", "one-level"])
def test_shapes_and_work_match_the_network_diffusers_builds(params):
    spec = get_family("image_diffusion")
    config = spec.parse_params(params)
    network = UNet2DModel(**unet_kwargs(config, 10))
    shapes = spec.parameter_shapes(config, 0, 10)
    assert {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()} == shapes
    assert parameter_count(shapes) == sum(p.numel() for p in network.parameters())
    # One pass's multiply-adds, as the budgets count them (parameters × positions), within 5% (the
    # counter leaves out the middle block's attention scores, which the estimate includes).
    image = torch.zeros(1, config.channels, config.image_size, config.image_size)
    labels = {"class_labels": torch.tensor([1])} if config.conditional else {}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(image, torch.tensor([3]), **labels)
    estimate = image_diffusion_positions_per_image(config) * parameter_count(spec.parameter_shapes(config, 0, 1))
    assert estimate == pytest.approx(counter.get_total_flops() / 2, rel=0.05)


@pytest.mark.parametrize("params", [
    {"block_out_channels": [30, 64]}, {"image_size": 10, "block_out_channels": [8, 16, 32]}, {"channels": 2},
    {"sample_steps": 101}, {"unknown": 1},
])
def test_configurations_the_network_cannot_take_are_refused(params):
    with pytest.raises(FamilyParamsError):
        get_family("image_diffusion").parse_params(params)
