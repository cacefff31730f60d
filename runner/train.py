"""``python -m runner``: compose the config, build the task, train (the fairseq-train of this project)."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.checkpoint import CheckpointError
from runner.config import CONF_DIR
from runner.data.text import DataError
from runner.plugins import PluginError, load_plugins

log = logging.getLogger("runner.train")


def train(cfg: DictConfig) -> dict:
    """Train with a composed config; the returned dict holds the final counters (best metric included)."""
    from runner.tracking import tracked
    from runner.trainer import Trainer  # torch is imported here, not at --help / --cfg time

    log.info("config:\n%s", OmegaConf.to_yaml(cfg))
    load_plugins(cfg)  # user_dir on sys.path; every _target_ imported, a broken plug-in named by file and line
    task = instantiate(cfg.task)
    with tracked(cfg) as tracker:  # MLflow (imported lazily); finished as FINISHED, FAILED or KILLED
        return Trainer(cfg, task, tracker=tracker).train()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """The Hydra entry point; returns the best validation metric (what a sweeper minimises)."""
    try:
        return train(cfg)["best"]
    except (DataError, CheckpointError, PluginError) as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the launcher reports it with the job's overrides; exiting here would end the whole sweep
        log.error("%s", e)  # a clear one-line message instead of a traceback
        sys.exit(1)


if __name__ == "__main__":
    main()
