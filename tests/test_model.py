"""EAN shapes, parameter budget, ECA kernel rule and in-graph normalisation."""

import pytest
import torch

from compression_worker.model.ean import EAN, EANConfig, count_parameters
from compression_worker.model.eca import ECA, eca_kernel_size
from edgefer.jobs.architectures import PRESETS


@pytest.mark.parametrize("channels,expected", [(16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (4, 1)])
def test_eca_kernel_size_follows_the_paper_rule(channels: int, expected: int) -> None:
    assert eca_kernel_size(channels) == expected
    assert eca_kernel_size(channels) % 2 == 1


def test_eca_keeps_shape_and_has_only_k_weights() -> None:
    eca = ECA(96)
    x = torch.randn(2, 96, 6, 6)
    assert eca(x).shape == x.shape
    assert sum(p.numel() for p in eca.parameters()) == eca_kernel_size(96)


def test_eca_output_is_input_scaled_per_channel() -> None:
    eca = ECA(8)
    x = torch.rand(1, 8, 4, 4) + 0.1
    ratio = eca(x) / x
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-6)
    assert ((ratio > 0) & (ratio < 1)).all()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_give_seven_logits_within_the_parameter_budget(name: str) -> None:
    model = EAN(PRESETS[name]).eval()
    assert model(torch.full((3, 1, 48, 48), 128.0)).shape == (3, 7)
    assert count_parameters(model) <= 200_000


def test_width_and_depth_are_configurable() -> None:
    small = EAN(EANConfig(stem_channels=8, widths=(16, 32), depths=(1, 1)))
    large = EAN(EANConfig(stem_channels=8, widths=(16, 32), depths=(2, 3)))
    assert count_parameters(small) < count_parameters(large)
    assert small(torch.zeros(1, 1, 48, 48)).shape == (1, 7)


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        EANConfig(widths=(16, 32), depths=(1,))
    with pytest.raises(ValueError):
        EANConfig(widths=(16, 32), depths=(1, 1), strides=(2,))


def test_strides_set_the_final_resolution() -> None:
    model = EAN(EANConfig(stem_channels=8, widths=(16, 32), depths=(1, 1), strides=(1, 2), stem_stride=2)).eval()
    features = model.blocks(model.stem(torch.zeros(1, 1, 48, 48)))
    assert features.shape == (1, 32, 12, 12)


def test_config_round_trips_through_a_dict() -> None:
    cfg = PRESETS["ean-l"]
    assert EANConfig.from_dict(cfg.to_dict()) == cfg


def test_model_normalises_raw_pixels_itself() -> None:
    model = EAN(PRESETS["ean-s"]).eval()
    normalised = model.normalize(torch.full((1, 1, 48, 48), 129.4))
    assert normalised.abs().max() < 1e-3
