"""A user's own mmseg extension package (imported by the config's ``custom_imports``)."""
from .synth_dataset import SynthStreetDataset

__all__ = ["SynthStreetDataset"]
