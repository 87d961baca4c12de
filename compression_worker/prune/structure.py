"""Which channels an EAN can lose, and the surgery that removes them (Torch-Pruning's DepGraph).

In an EAN every channel dimension is either the stem's or one stage's width: depthwise convs and the
residual shortcuts couple all blocks of a stage. So DepGraph finds one group per dimension, and a
pruned EAN is again a dense EAN with smaller `stem_channels`/`widths` (ECA kernels pinned to their
trained sizes), which is what `rebuild` returns: save, load and export then work unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch_pruning as tp
from torch import nn

from compression_worker.model.ean import EAN, EANConfig
from compression_worker.model.eca import ECA, eca_kernel_size

EXAMPLE_INPUT = torch.full((1, 1, 48, 48), 128.0)


class ECAPruner(tp.pruner.function.BasePruningFunc):
    """ECA's 1-D kernel slides over any number of channels: removing channels leaves it as it is."""

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> None:
        return None

    def get_in_channels(self, layer: nn.Module) -> None:
        return None


@dataclass
class ChannelDim:
    """One prunable channel dimension: "stem" or "stageK", its DepGraph root and its channels' scores."""

    key: str
    root: nn.Module
    handler: object
    scores: torch.Tensor

    @property
    def channels(self) -> int:
        return len(self.scores)


def dependency_graph(model: EAN) -> tp.DependencyGraph:
    """DepGraph traced with an example face on the model's own device (CPU or GPU)."""
    example = EXAMPLE_INPUT.to(next(model.parameters()).device)
    return tp.DependencyGraph().build_dependency(model, example, customized_pruners={ECA: ECAPruner()})


def _stage_of_block(config: EANConfig) -> list[int]:
    return [stage for stage, depth in enumerate(config.depths) for _ in range(depth)]


def channel_dims(model: EAN, graph: tp.DependencyGraph, importance: tp.importance.Importance) -> list[ChannelDim]:
    names = {module: name for name, module in model.named_modules()}
    stage_of = _stage_of_block(model.config)
    dims = []
    for group in graph.get_all_groups(ignored_layers=[model.classifier], root_module_types=[nn.Conv2d]):
        layer_names = {names.get(dep.layer, "") for dep, _ in group}
        if "stem.0" in layer_names:
            key = "stem"
        else:
            block = min(int(n.split(".")[1]) for n in layer_names if n.startswith("blocks.") and n.endswith("pw.0"))
            key = f"stage{stage_of[block] + 1}"
        dims.append(ChannelDim(key, group[0].dep.target.module, group[0].dep.handler, importance(group).detach().float()))
    return sorted(dims, key=lambda d: (d.key != "stem", d.key))


def config_with(config: EANConfig, keep: dict[str, int], eca_kernels: tuple[int, ...]) -> EANConfig:
    widths = tuple(keep.get(f"stage{i + 1}", w) for i, w in enumerate(config.widths))
    return replace(config, stem_channels=keep.get("stem", config.stem_channels), widths=widths, eca_kernels=eca_kernels)


def eca_kernels_of(model: EAN) -> tuple[int, ...]:
    return tuple(block.eca.kernel_size for block in model.blocks)


MIRROR_PASSES = 2  # the exported graph runs the network on the face and its mirror
BUDGET_MARGIN = 0.98  # aim a little under a MAC budget: the ONNX count includes small ops the plan skips


def reduction_to_budget(config: EANConfig, max_macs_per_face: float) -> float:
    """The share of `config`'s MACs to prune so that its mirror-averaged graph fits `max_macs_per_face`
    (every pass counted, as a fleet's budget is); <= 0 when it fits already."""
    return 1 - max_macs_per_face / MIRROR_PASSES * BUDGET_MARGIN / macs_of(config)


def macs_of(config: EANConfig) -> int:
    """Multiply-adds of convolutions, ECA and classifier for one pass (the mirror-averaged export runs two).

    Counted from the config in closed form, so the ratio planner can try thousands of candidates.
    """
    size = -(-48 // config.stem_stride)
    macs = config.stem_kernel**2 * config.stem_channels * size * size
    cin = config.stem_channels
    kernels = iter(config.eca_kernels)
    for width, depth, stride in zip(config.widths, config.depths, config.stage_strides):
        for i in range(depth):
            size = -(-size // (stride if i == 0 else 1))
            macs += 9 * cin * size * size + cin * width * size * size + next(kernels, eca_kernel_size(width)) * width
            cin = width
    return macs + cin * config.num_classes


def prune_channels(model: EAN, keep: dict[str, int], importance: tp.importance.Importance) -> EAN:
    """A new dense EAN keeping, in every dimension, the `keep[key]` channels of highest importance."""
    work = copy.deepcopy(model).cpu().eval()
    graph = dependency_graph(work)
    for dim in channel_dims(work, graph, importance):
        drop = dim.channels - keep.get(dim.key, dim.channels)
        if drop > 0:
            idxs = torch.argsort(dim.scores)[:drop].tolist()
            graph.get_pruning_group(dim.root, dim.handler, idxs=idxs).prune()
    return rebuild(work, model.config)


def rebuild(pruned: nn.Module, original: EANConfig) -> EAN:
    """The surgically pruned module as a plain EAN of its new widths (proves the result is dense)."""
    widths = {"stem": pruned.stem[0].out_channels}
    last_block = -1
    for stage, depth in enumerate(original.depths):
        last_block += depth
        widths[f"stage{stage + 1}"] = pruned.blocks[last_block].pw[0].out_channels
    config = config_with(original, widths, eca_kernels_of(pruned))
    dense = EAN(config)
    dense.load_state_dict(pruned.state_dict())
    return dense.eval()
