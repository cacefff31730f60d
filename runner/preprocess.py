"""``python -m runner.preprocess``: prepare a task's data ahead of training and report on it (fairseq-preprocess).

Training prepares data itself when it is missing or stale; this command does only that step, e.g. on a login node
before a sweep, with ``force=true`` to rebuild regardless of the cache.
"""

from __future__ import annotations

import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from runner.cli import bad_input_exits
from runner.config import CONF_DIR
from runner.data.text import DataError

log = logging.getLogger("runner.preprocess")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="preprocess")
def main(cfg: DictConfig) -> None:
    with bad_input_exits(DataError):
        task = instantiate(cfg.task)
        prepared = task.prepare(force=cfg.force)
    log.info("prepared data in %s (dictionary: %d symbols)", prepared.data_bin, len(prepared.dictionary))


if __name__ == "__main__":
    main()
