"""The EAN presets by name and the shape they describe: plain data (no torch), so a job that names an
architecture is checked where it is submitted, and the network code builds from the same objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgefer.labels import NUM_CLASSES


@dataclass(frozen=True)
class EANConfig:
    """Stem, then per stage a width, a depth and the stride of its first block."""

    stem_channels: int = 24
    widths: tuple[int, ...] = (48, 96, 160, 256)
    depths: tuple[int, ...] = (2, 2, 3, 1)
    strides: tuple[int, ...] = ()  # empty: every stage downsamples by 2
    stem_kernel: int = 3
    stem_stride: int = 1
    dropout: float = 0.2
    num_classes: int = NUM_CLASSES
    eca_kernels: tuple[int, ...] = ()  # per block; empty: adaptive to the width (pinned when pruning changes widths)

    def __post_init__(self) -> None:
        if not self.widths or len(self.widths) != len(self.depths):
            raise ValueError("widths and depths must be non-empty and of equal length")
        if self.strides and len(self.strides) != len(self.widths):
            raise ValueError("strides, when given, needs one entry per stage")
        if min(self.widths) < 1 or min(self.depths) < 1 or self.stem_channels < 1:
            raise ValueError("widths, depths and stem_channels must be positive")
        if self.eca_kernels and len(self.eca_kernels) != sum(self.depths):
            raise ValueError("eca_kernels, when given, needs one entry per block")

    @property
    def stage_strides(self) -> tuple[int, ...]:
        return self.strides or (2,) * len(self.widths)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EANConfig:
        values = dict(data)
        for key in ("widths", "depths", "strides", "eca_kernels"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


# Named configurations: "ean-m" is the shipped baseline, "ean-s" the CPU-budget student that is distilled and
# pruned for the edge (their numbers: docs/BENCHMARKS.md).
PRESETS: dict[str, EANConfig] = {
    "ean-s": EANConfig(stem_channels=16, widths=(32, 64, 128, 192), depths=(1, 2, 2, 2)),
    "ean-m": EANConfig(),
    "ean-l": EANConfig(stem_channels=16, widths=(32, 80, 160, 256), depths=(1, 2, 3, 2)),
    "ean-xs": EANConfig(stem_channels=16, widths=(16, 32, 48), depths=(1, 1, 1)),  # smoke tests and demos only
}
