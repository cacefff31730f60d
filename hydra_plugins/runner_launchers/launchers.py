"""Sweep launchers: Hydra's local launcher and submitit's Slurm launcher, with two changes users need.

- Every launcher here reports failed jobs at the end of a sweep (job number, overrides, error), before Hydra turns
  the first failure into a non-zero exit.
- The Slurm launcher composes each job's config in the submitting process and ships it with the job, so a job that
  waits in the queue runs what was submitted even if conf/ changes meanwhile (stock hydra-submitit re-reads the YAML
  files when the job starts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import DictConfig, open_dict

log = logging.getLogger("runner.sweep")


def report_failures(results: Sequence[JobReturn], initial_job_idx: int) -> None:
    """Log one line per failed job (number, overrides, error) and a count, so no failure hides in a long sweep."""
    failed = [(initial_job_idx + i, r) for i, r in enumerate(results) if r.status == JobStatus.FAILED]
    if not failed:
        log.info("sweep: all %d jobs completed", len(results))
        return
    lines = [f"sweep: {len(failed)} of {len(results)} jobs FAILED:"]
    for num, r in failed:
        err = r._return_value  # the exception; JobReturn.return_value would raise it
        lines.append(f"  #{num} {' '.join(filter_overrides(r.overrides or []))}: {type(err).__name__}: {err}")
    log.error("\n".join(lines))


class LocalLauncher(BasicLauncher):
    """Hydra's basic launcher (jobs one after another in this process) plus the failure summary."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        results = super().launch(job_overrides, initial_job_idx)
        report_failures(results, initial_job_idx)
        return results


class SlurmLauncher(SubmititSlurmLauncher):
    """submitit's Slurm launcher running the configs composed at submission, plus the failure summary."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.hydra_context is not None and self.config is not None
        self.frozen = {
            tuple(o): self.hydra_context.config_loader.load_sweep_config(self.config, list(o)) for o in job_overrides
        }
        results = super().launch(job_overrides, initial_job_idx)
        report_failures(results, initial_job_idx)
        return results

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """Runs inside the Slurm job (also after a requeue): the frozen config, not a fresh composition."""
        import submitit

        assert self.hydra_context is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        config: DictConfig = self.frozen[tuple(sweep_overrides)].copy()
        with open_dict(config.hydra.job):
            config.hydra.job.id = submitit.JobEnvironment().job_id
            config.hydra.job.num = job_num
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=config,
            job_dir_key=job_dir_key,
            job_subdir_key="hydra.sweep.subdir",
        )
