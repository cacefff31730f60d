"""The training loop, top to bottom: set up, resume, then epochs of updates with validation and checkpoints.

Everything that must survive an interruption (epoch, batches consumed in it, update count, best metric, patience
counter, cumulative time, RNG state, optimizer and scheduler) goes into each checkpoint, so re-running the same
command continues exactly where the last checkpoint left off, mid-epoch included.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner import checkpoint as ckpt
from runner import distributed
from runner.lr_scheduler import steps_on_validation
from runner.meters import JsonlRecorder, Progress, Recorder, TrainMeters, valid_stats
from runner.preemption import PreemptionGuard

if TYPE_CHECKING:
    from runner.tracking import Tracker

log = logging.getLogger("runner.train")


class TrainingError(RuntimeError):
    """Training cannot go on (for example, repeated non-finite losses); the last good checkpoint is kept."""


@dataclass
class TrainState:
    """The counters a checkpoint carries so that a resumed run continues where the last one stopped."""

    epoch: int = 1
    batch_offset: int = 0  # batches of ``epoch`` already consumed
    num_updates: int = 0
    best: Optional[float] = None
    bad_validations: int = 0  # validations without improvement, for patience
    train_time: float = 0.0  # seconds, cumulative across resumes
    nonfinite_in_a_row: int = 0


class Trainer:
    def __init__(
        self, cfg: DictConfig, task: Any, recorders: Optional[list[Recorder]] = None, tracker: Optional[Tracker] = None
    ):
        self.cfg = cfg
        self.task = task
        c = cfg.common
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        use_cuda = torch.cuda.is_available() and not c.cpu
        d = cfg.distributed
        self.dist = distributed.init(d.backend, d.timeout_s, use_cuda)
        self.device = torch.device("cuda", self.dist.local_rank) if use_cuda else torch.device("cpu")
        torch.manual_seed(c.seed)  # the same initial weights on every rank
        if self.dist.is_main:
            task.prepare()
        distributed.barrier(self.dist)  # other ranks reuse what rank 0 prepared
        task.prepare()
        # Weights that come from a checkpoint are read once and taken in place by a model built on the meta device.
        self._initial = self.initial_weights()
        self.module = self.build_module().to(self.device)
        # What the criterion calls: the module itself, or its DDP/FSDP wrapper that synchronises gradients.
        self.model = distributed.wrap(self.module, self.dist, d.strategy, self.device)
        self.criterion = task.build_criterion(cfg.criterion).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = instantiate(cfg.optimizer)(self.params)
        self.scheduler = instantiate(cfg.lr_scheduler)(self.optimizer)
        self.state = TrainState()
        self._saved_at: Optional[int] = None  # num_updates at the last checkpoint write
        self.save_dir = Path(cfg.checkpoint.save_dir)
        self.saver = ckpt.BackgroundSaver()
        self.recorders: list[Recorder] = [JsonlRecorder(c.meters_file), *(recorders or [])]
        if tracker:
            self.recorders.append(tracker)
        if not self.dist.is_main:
            self.recorders = []  # one record of the run, kept by rank 0
        self.tracker = tracker  # MLflow; started after restore() so that a resumed run continues its MLflow run
        self.tracking: dict[str, Any] = {}  # the MLflow run this training continues (from the checkpoint)
        self.progress = Progress(c.log_format if self.dist.is_main else "none", c.log_interval)
        self.max_positions = self.module.max_positions()
        n_params = sum(p.numel() for p in self.module.parameters())
        log.info(
            "model: %s, %s parameters; criterion: %s; optimizer: %s",
            type(self.module).__name__,
            f"{n_params:,}",
            type(self.criterion).__name__,
            type(self.optimizer).__name__,
        )

    # ----------------------------------------------------------------------------------------------- precision
    def autocast(self) -> AbstractContextManager[Any]:
        if self.cfg.common.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # -------------------------------------------------------------------------------------------- checkpoints
    def initial_weights(self) -> Optional[tuple[str, dict[str, Any]]]:
        """(path, checkpoint) of where this run's weights come from: the restore file (memory-mapped) when it exists,
        else ``finetune_from_model``; None when training starts from random weights."""
        cc = self.cfg.checkpoint
        path = Path(cc.restore_file)
        if not path.is_absolute():
            path = Path(cc.save_dir) / path
        if path.is_file():
            return str(path), ckpt.load(path, mmap=True)
        if cc.finetune_from_model:
            from runner.fairseq_import import finetune_weights

            dictionary = getattr(self.task, "source_dictionary", None)
            return cc.finetune_from_model, {
                "model": finetune_weights(cc.finetune_from_model, self.cfg.model, dictionary)
            }
        return None

    def build_module(self) -> torch.nn.Module:
        """The task's model: random weights from scratch, else built on the meta device holding the loaded ones (a
        1.6B model never materialises a random fp32 copy first)."""
        if self._initial is None:
            return self.task.build_model(self.cfg.model)
        path, state = self._initial
        return ckpt.build_with_weights(lambda: self.task.build_model(self.cfg.model), state["model"], path)

    def take_initial(self, path: str | Path) -> Optional[dict[str, Any]]:
        """The checkpoint read at start-up for ``path`` (then forgotten, freeing it), or None."""
        initial, self._initial = self._initial, None
        return initial[1] if initial is not None and Path(initial[0]) == Path(path) else None

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resumed run needs; with several processes a collective call, complete on rank 0."""
        model_sd, optim_sd = distributed.full_state_dicts(self.model, self.optimizer, self.dist)
        rng = {
            "torch": torch.get_rng_state(),
            **({"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
        }
        return {
            "version": ckpt.FORMAT_VERSION,
            "cfg": OmegaConf.to_container(self.cfg, resolve=True),
            "model": model_sd,
            "optimizer": optim_sd if self.cfg.checkpoint.save_optimizer_state else None,
            "lr_scheduler": self.scheduler.state_dict(),
            "trainer": dict(vars(self.state)),
            "rng": rng,
            "rng_per_rank": distributed.gather_objects(rng, self.dist),
            "task_state": self.task.state(),
            "tracking": self.tracker.state() if self.tracker else self.tracking,
        }

    def save(self, end_of_epoch: bool, improved: bool) -> None:
        """Write last (always), best (when improved) and the periodic epoch/update checkpoints, then prune."""
        cc = self.cfg.checkpoint
        if cc.no_save:
            return
        s = self.state
        names = []
        if end_of_epoch and not cc.no_epoch_checkpoints and s.epoch % cc.save_interval == 0:
            names.append(f"checkpoint{s.epoch}.pt")
        if not end_of_epoch and cc.save_interval_updates > 0 and s.num_updates % cc.save_interval_updates == 0:
            names.append(f"checkpoint_{s.epoch}_{s.num_updates}.pt")
        if improved:
            names.append("checkpoint_best.pt")
        names.append("checkpoint_last.pt")
        start = time.perf_counter()
        state = self.checkpoint_state()
        paths = [self.save_dir / n for n in names]
        if self.dist.is_main and cc.background_save:
            epoch, updates = s.epoch, s.num_updates

            def written() -> None:
                secs = self.saver.last_write_seconds
                log.info("saved %s (epoch %d, %d updates) in %.1fs", ", ".join(names), epoch, updates, secs)
                ckpt.prune(self.save_dir, cc.keep_interval_updates, cc.keep_last_epochs)

            blocked = self.saver.save(state, paths, written)
            log.info("writing %s in the background (training waited %.1fs)", ", ".join(names), blocked)
        elif self.dist.is_main:
            ckpt.save_atomic(state, paths)
        distributed.barrier(self.dist)
        self._saved_at = s.num_updates
        if not self.dist.is_main or cc.background_save:
            return
        log.info(
            "saved %s (epoch %d, %d updates) in %.1fs",
            ", ".join(names),
            s.epoch,
            s.num_updates,
            time.perf_counter() - start,
        )
        ckpt.prune(self.save_dir, cc.keep_interval_updates, cc.keep_last_epochs)

    def restore(self) -> None:
        """Resume from ``restore_file`` when it exists; otherwise start from ``finetune_from_model`` if given."""
        cc = self.cfg.checkpoint
        path = Path(cc.restore_file)
        if not path.is_absolute():
            path = self.save_dir / path
        if path.is_file():
            state = self.take_initial(path) or ckpt.load(path)
            optim_sd = None if cc.reset_optimizer else state["optimizer"]
            if optim_sd is None and not cc.reset_optimizer:
                log.warning("%s has no optimizer state (checkpoint.save_optimizer_state=false): it starts afresh", path)
            distributed.load_full_state_dicts(self.model, self.optimizer, state["model"], optim_sd, self.dist)
            if not cc.reset_lr_scheduler:
                self.scheduler.load_state_dict(state["lr_scheduler"])
            saved = TrainState(**state["trainer"])
            if cc.reset_dataloader:
                saved.epoch, saved.batch_offset = 1, 0
            if cc.reset_meters:
                saved.train_time = 0.0
            self.state = saved
            self.tracking = state.get("tracking") or {}
            per_rank = state.get("rng_per_rank") or [state["rng"]]
            rng = per_rank[self.dist.rank] if len(per_rank) == self.dist.world_size else state["rng"]
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            log.info(
                "resumed from %s: epoch %d, batch %d, %d updates",
                path,
                saved.epoch,
                saved.batch_offset,
                saved.num_updates,
            )
        elif cc.finetune_from_model:
            from runner.fairseq_import import finetune_weights  # ours as saved, or a fairseq file converted

            dictionary = getattr(self.task, "source_dictionary", None)
            initial = self.take_initial(cc.finetune_from_model)
            weights = (
                initial["model"] if initial else finetune_weights(cc.finetune_from_model, self.cfg.model, dictionary)
            )
            distributed.load_full_state_dicts(self.model, None, weights, None, self.dist)
            log.info("fine-tuning from %s (optimizer, scheduler and counters start fresh)", cc.finetune_from_model)

    # ------------------------------------------------------------------------------------------------- steps
    def train_step(
        self, batches: list[dict[str, Any]], n_padding: int = 0
    ) -> Optional[tuple[list[dict[str, Any]], float, bool]]:
        """One update over ``update_freq`` micro-batches (on every rank), normalised by the update's total target
        tokens over all ranks, so that N processes compute what one process with N times the update_freq would.

        The last ``n_padding`` batches only keep this rank in step with ranks that had one more batch at the end of
        an epoch: their loss counts zero. Returns the logging outputs (summed over ranks), gradient norm and whether
        it was clipped, or None when the update was skipped because the loss or gradient was not finite.
        """
        self.model.train()
        self.criterion.train()
        outputs, sample_size, finite = [], 0, True
        for i, batch in enumerate(batches):
            batch = self.task.move_to(batch, self.device)
            padding = i >= len(batches) - n_padding
            with self.sync_gradients(i == len(batches) - 1), self.autocast():
                loss, size, logging_output = self.criterion(self.model, batch)
                (loss * 0.0 if padding else loss).backward()
            if not padding:
                finite &= math.isfinite(logging_output["loss"])
                sample_size += size
                outputs.append(logging_output)
        if self.dist.enabled:
            keys = ("loss", "nll_loss", "ntokens", "nsentences")
            totals = distributed.all_sum(
                [float(not finite), sample_size, *(sum(o[k] for o in outputs) for k in keys)], self.dist
            )
            finite, sample_size = totals[0] == 0, int(totals[1])
            outputs = [dict(zip(keys, totals[2:]))]
        # DDP/FSDP average gradients over ranks; scale to the sum over ranks divided by the total sample size.
        scale = self.dist.world_size / max(sample_size, 1)
        for p in self.params:
            if p.grad is not None:
                p.grad.mul_(scale)
        clip = self.cfg.optimization.clip_norm
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip > 0 else float("inf"))
        gnorm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if not (finite and math.isfinite(gnorm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.num_updates += 1
        if not steps_on_validation(self.scheduler):
            self.scheduler.step()
        return outputs, gnorm, clip > 0 and gnorm > clip

    def sync_gradients(self, sync: bool) -> AbstractContextManager[Any]:
        """Skip the gradient all-reduce on all but the last micro-batch of an update (DDP's no_sync)."""
        if not sync and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP
            self.model.set_requires_gradient_sync(sync)
        return nullcontext()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss and perplexity of the valid subset (every example, none skipped unless configured), split over ranks.

        FSDP's forward gathers parameters collectively, so there every rank runs the same number of batches."""
        self.model.eval()
        self.criterion.eval()
        dcfg = self.cfg.dataset
        split = dcfg.valid_subset
        ds = self.task.dataset(split)
        batches = self.task.batches(split, self.max_positions, dcfg, self.cfg.common.seed, train=False)
        mine = batches[self.dist.rank :: self.dist.world_size]
        # FSDP's forward gathers parameters collectively (fully_shard wraps in place, so model is module): every
        # rank then runs the same number of batches, padding with a repeated one that is not counted.
        collective = self.dist.enabled and self.model is self.module
        steps = -(-len(batches) // self.dist.world_size) if collective else len(mine)
        loss = nll = 0.0
        ntokens = 0
        for i in self.progress.iterate(range(steps), self.state.epoch, "valid", steps):
            idx = mine[i] if i < len(mine) else batches[0]
            batch = self.task.move_to(ds.collate(idx), self.device)
            with self.autocast():
                _, _, out = self.criterion(self.module, batch)
            if i < len(mine):
                loss, nll, ntokens = loss + out["loss"], nll + out["nll_loss"], ntokens + out["ntokens"]
        loss, nll, ntokens = distributed.all_sum([loss, nll, ntokens], self.dist)
        stats = {**valid_stats(loss, nll, int(ntokens)), "num_updates": self.state.num_updates}
        return stats

    def after_validation(self, stats: dict[str, float]) -> bool:
        """Track the best metric and patience; step validation-driven schedules. True when it improved."""
        cc = self.cfg.checkpoint
        value = stats[cc.best_checkpoint_metric]
        s = self.state
        better = s.best is None or (value > s.best if cc.maximize_best_checkpoint_metric else value < s.best)
        if better:
            s.best, s.bad_validations = value, 0
        else:
            s.bad_validations += 1
        if steps_on_validation(self.scheduler):
            self.scheduler.step(stats["loss"])
        stats[f"best_{cc.best_checkpoint_metric}"] = s.best
        self.record("valid", {"epoch": s.epoch, **stats})
        self.progress.summary(s.epoch, "valid", stats)
        return better

    def record(self, kind: str, stats: dict[str, Any]) -> None:
        for r in self.recorders:
            r(kind, stats)

    # -------------------------------------------------------------------------------------------------- loop
    def out_of_time(self) -> bool:
        limit = self.cfg.optimization.stop_time_hours
        return limit > 0 and self.state.train_time >= limit * 3600

    def patience_exhausted(self) -> bool:
        p = self.cfg.checkpoint.patience
        if p > 0 and self.state.bad_validations >= p:
            log.info("early stop: no improvement in %d validations (checkpoint.patience=%d)", p, p)
            return True
        return False

    def done(self) -> bool:
        o, s = self.cfg.optimization, self.state
        return (
            (o.max_update > 0 and s.num_updates >= o.max_update)
            or (o.max_epoch > 0 and s.epoch > o.max_epoch)
            or self.out_of_time()
        )

    def epoch_batches(self, batches: list[np.ndarray], epoch: int) -> list[np.ndarray]:
        """The epoch's batch order: a permutation seeded by (seed, epoch), so a resumed run sees the same order."""
        order = np.random.RandomState((self.cfg.common.seed + epoch) % 2**32).permutation(len(batches))
        return [batches[i] for i in order]

    def train(self) -> dict[str, Any]:
        """Train until a stopping condition; returns the final state as a dict.

        However training ends (an error included), a checkpoint being written in the background is completed first.
        """
        try:
            return self._train()
        finally:
            self.saver.wait()

    def _train(self) -> dict[str, Any]:
        self.restore()
        self.preemption = PreemptionGuard()
        if self.tracker:
            self.tracker.start(self.tracking)
        dcfg, o = self.cfg.dataset, self.cfg.optimization
        split = dcfg.train_subset
        ds = self.task.dataset(split)
        all_batches = self.task.batches(split, self.max_positions, dcfg, self.cfg.common.seed, train=True)
        if self.state.batch_offset >= len(all_batches):  # the checkpoint was written at the end of an epoch
            self.state.epoch, self.state.batch_offset = self.state.epoch + 1, 0
        self._saved_at = self.state.num_updates if self.state.num_updates else None
        if self.done():
            log.info(
                "nothing to do: training already reached its limit (epoch %d, %d updates)",
                self.state.epoch,
                self.state.num_updates,
            )
            return dict(vars(self.state))
        stop = False
        while not stop and not self.done():
            s = self.state
            batches = self.epoch_batches(all_batches, s.epoch)
            meters, epoch_meters = TrainMeters(), TrainMeters()
            # An update takes the next update_freq x world_size batches of the epoch's order; rank r gets every
            # world_size-th of them, so N processes see what one process with N x update_freq would.
            per_update = o.update_freq * self.dist.world_size
            starts = range(s.batch_offset, len(batches), per_update)
            total_updates = -(-len(batches) // per_update)
            for start in self.progress.iterate(starts, s.epoch, "train", total_updates, s.batch_offset // per_update):
                share = batches[start : start + per_update][self.dist.rank :: self.dist.world_size]
                n_padding = -(-min(per_update, len(batches) - start) // self.dist.world_size) - len(share)
                group = [ds.collate(idx) for idx in share or batches[start : start + 1]]
                group += group[:1] * (n_padding - (0 if share else 1))
                last_of_epoch = start + per_update >= len(batches)
                t0 = time.perf_counter()
                result = self.train_step(group, n_padding)
                s.train_time = distributed.broadcast_float(s.train_time + time.perf_counter() - t0, self.dist)
                s.batch_offset = min(start + per_update, len(batches))
                if result is None:
                    s.nonfinite_in_a_row += 1
                    log.warning(
                        "skipped an update at epoch %d batch %d: non-finite loss or gradient (%d in a row)",
                        s.epoch,
                        s.batch_offset,
                        s.nonfinite_in_a_row,
                    )
                    if s.nonfinite_in_a_row >= o.max_nonfinite_updates:
                        raise TrainingError(
                            f"{s.nonfinite_in_a_row} consecutive updates had a non-finite loss or gradient "
                            f"(optimization.max_nonfinite_updates={o.max_nonfinite_updates}); stopping. The last "
                            f"good checkpoint is {self.save_dir / 'checkpoint_last.pt'}. Try a lower optimizer.lr, "
                            "optimization.clip_norm, or check the data."
                        )
                    continue
                s.nonfinite_in_a_row = 0
                outputs, gnorm, clipped = result
                meters.add(outputs, gnorm, clipped)
                epoch_meters.add(outputs, gnorm, clipped)
                self.progress.live(epoch_meters.loss_per_token(), self.optimizer.param_groups[0]["lr"])
                if s.num_updates % self.progress.log_interval == 0 or last_of_epoch:
                    stats = {
                        **meters.stats(),
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "num_updates": s.num_updates,
                        "train_wall": round(s.train_time, 1),
                    }
                    self.progress.interval(s.epoch, s.batch_offset // per_update, total_updates, stats)
                    self.record("train_inner", {"epoch": s.epoch, **stats})
                    meters.reset()
                if last_of_epoch:
                    break
                stop = self.mid_epoch_hooks()
                if stop:
                    break
            if stop:
                break
            self.record("train", {"epoch": s.epoch, **epoch_meters.stats(), "num_updates": s.num_updates})
            self.progress.summary(s.epoch, "train", epoch_meters.stats())
            improved = False
            if not dcfg.disable_validation and (s.epoch % dcfg.validate_interval == 0 or self.done()):
                improved = self.after_validation(self.validate())
                stop = self.patience_exhausted()
            self.save(end_of_epoch=True, improved=improved)
            s.epoch, s.batch_offset = s.epoch + 1, 0
        if self._saved_at != self.state.num_updates:
            self.save(end_of_epoch=False, improved=False)  # checkpoint_last holds the final weights
        self.saver.wait()  # the last checkpoint is on disk before train() returns
        self.preemption.close()
        log.info(
            "done training: epoch %d, %d updates, best %s %s",
            self.state.epoch - (self.state.batch_offset == 0),  # the last epoch trained, not the next one
            self.state.num_updates,
            self.cfg.checkpoint.best_checkpoint_metric,
            self.state.best,
        )
        return dict(vars(self.state))

    def mid_epoch_hooks(self) -> bool:
        """Validation and checkpoints every N updates, and the update/time limits. True to stop training."""
        dcfg, cc, s = self.cfg.dataset, self.cfg.checkpoint, self.state
        hit_limit = self.done()
        validate = not dcfg.disable_validation and (
            hit_limit or (dcfg.validate_interval_updates > 0 and s.num_updates % dcfg.validate_interval_updates == 0)
        )
        save = hit_limit or (cc.save_interval_updates > 0 and s.num_updates % cc.save_interval_updates == 0)
        improved = False
        stop = hit_limit
        if validate:
            improved = self.after_validation(self.validate())
            stop = stop or self.patience_exhausted()
        preempted = distributed.any_true(self.preemption.requested, self.dist)
        if save or improved or stop or preempted:
            self.save(end_of_epoch=False, improved=improved)
        if preempted:
            self.saver.wait()  # the requeued job resumes from this checkpoint: it must be complete
            self.preemption.hand_over()  # under submitit: requeue this job and exit; the re-run resumes
        return stop
