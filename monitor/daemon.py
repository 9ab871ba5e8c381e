"""The daemon behind `repmon run`: schedules every part's jobs and stops cleanly.

Interval jobs run under APScheduler (AsyncIOScheduler: one instance of a job
at a time, missed runs coalesced). Services (long-running loops such as an
IMAP IDLE watcher) are asyncio tasks supervised here: a service that crashes
is logged and restarted with back-off, never taking the others down.
SIGINT / SIGTERM set `runtime.stopping`; jobs get a grace period to finish
their current batch (a batch is one transaction, so stopping mid-way loses
nothing either), then are cancelled. A second Ctrl-C cancels at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.config import RepmonConfig
from monitor.core.config import ConfigError
from monitor.core.db import make_engine, redact_url
from monitor.core.runtime import Backoff, JobSpec, Runtime
from monitor.ingest.imap import ImapError
from monitor.parts import collect_jobs, upgrade_schema

log = logging.getLogger("repmon.daemon")

STOP_GRACE_S = 10.0


async def run(config: RepmonConfig, *, once: bool = False, progress: bool = False) -> int:
    try:
        engine = make_engine(config.database_url, echo=config.database.echo)
    except ConfigError:
        raise
    try:
        try:
            await asyncio.to_thread(upgrade_schema, engine)
        except Exception as exc:
            log.error("cannot open the database %s: %s: %s", redact_url(config.database_url), type(exc).__name__,
                      str(exc).splitlines()[0] if str(exc) else "")
            return 1
        runtime = Runtime(engine=engine, once=once, progress=progress, logs_as_json=config.logging.as_json)
        jobs = collect_jobs(config, runtime)
        if not jobs:
            log.warning("nothing to do: the configuration has no mailboxes, folders or other jobs")
        if once:
            return await _run_once(jobs)
        return await _run_daemon(runtime, jobs)
    finally:
        engine.dispose()


async def _run_once(jobs: list[JobSpec]) -> int:
    results = await asyncio.gather(*(_one(job) for job in jobs))
    return 0 if all(results) else 1


async def _one(job: JobSpec) -> bool:
    try:
        await job.run()
        return True
    except Exception as exc:
        _log_failure(job, exc)
        return False


def _log_failure(job: JobSpec, exc: BaseException) -> None:
    if isinstance(exc, (ConfigError, ImapError, OSError)):
        log.error("job %s failed: %s", job.name, exc, extra={"job": job.name})
    else:
        log.error("job %s failed: %s: %s", job.name, type(exc).__name__, exc, exc_info=exc, extra={"job": job.name})


async def _run_daemon(runtime: Runtime, jobs: list[JobSpec]) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if runtime.stopping.is_set():
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            if main_task is not None:
                main_task.cancel()
            return
        log.info("%s received: stopping (again to force)", signal.Signals(signum).name)
        runtime.stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    running: set[asyncio.Task] = set()

    def interval_wrapper(job: JobSpec):
        async def tick() -> None:
            if runtime.stopping.is_set():
                return
            task = asyncio.current_task()
            if task is not None:
                running.add(task)
            try:
                await job.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log_failure(job, exc)
            finally:
                if task is not None:
                    running.discard(task)
        return tick

    scheduler = AsyncIOScheduler(timezone=timezone.utc)
    for job in jobs:
        if job.service is None:
            scheduler.add_job(interval_wrapper(job), IntervalTrigger(seconds=job.interval_s), id=job.name,
                              name=job.name, max_instances=1, coalesce=True, misfire_grace_time=None,
                              next_run_time=datetime.now(timezone.utc))
    services = [asyncio.create_task(_supervise(job, runtime), name=job.name) for job in jobs if job.service]
    scheduler.start()
    log.info("repmon running: %d jobs (%d services)", len(jobs), len(services))
    stopped_scheduler = False

    def stop_scheduler() -> None:
        # shutdown() only queues the real shutdown on the loop: call it once
        nonlocal stopped_scheduler
        if not stopped_scheduler:
            stopped_scheduler = True
            scheduler.shutdown(wait=False)

    try:
        await runtime.stopping.wait()
        stop_scheduler()
        pending = services + list(running)
        if pending:
            _, still = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
    except asyncio.CancelledError:  # forced stop
        for task in services + list(running):
            task.cancel()
        await asyncio.gather(*services, *running, return_exceptions=True)
    finally:
        stop_scheduler()
        await asyncio.sleep(0)  # let the queued scheduler shutdown run
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    log.info("repmon stopped")
    return 0


async def _supervise(job: JobSpec, runtime: Runtime) -> None:
    assert job.service is not None
    backoff = Backoff(1.0, 300.0)
    while not runtime.stopping.is_set():
        try:
            await job.service()
            if runtime.stopping.is_set():
                return
            log.warning("service %s returned unexpectedly; restarting", job.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log_failure(job, exc)
        delay = backoff.next_delay()
        if await runtime.sleep(delay):
            return
