"""An ``Engine`` in the shape of DFormer's ``utils/engine/engine.py``: parses the command
line (with the script's own parser), reads ``LOCAL_RANK``/``WORLD_SIZE`` from the launcher's
environment, keeps the epoch/iteration state and is used as a context manager."""
import argparse
import os


class State:
    def __init__(self):
        self.epoch = 1
        self.iteration = 0
        self.model = None
        self.optimizer = None

    def register(self, **kwargs):
        for k, v in kwargs.items():
            setattr(self, k, v)


class Engine:
    def __init__(self, custom_parser=None):
        self.parser = custom_parser or argparse.ArgumentParser()
        self.parser.add_argument("-d", "--devices", default="cpu", type=str)
        self.parser.add_argument("-c", "--continue", dest="continue_fpath", default=None)
        self.parser.add_argument("--local-rank", "--local_rank", dest="local_rank", default=0, type=int)
        self.args = self.parser.parse_args()
        self.state = State()
        self.continue_state_object = self.args.continue_fpath
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.args.local_rank))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.devices = [self.args.devices]

    def register_state(self, **kwargs):
        self.state.register(**kwargs)

    def update_iteration(self, epoch, iteration):
        self.state.epoch = epoch
        self.state.iteration = iteration

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return False  # never swallow the training's exception
