"""segwatch: a terminal supervisor for semantic-segmentation training."""
__version__ = "0.1.0"
