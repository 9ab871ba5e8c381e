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
from datetime import datetime, timezone
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.cluster.member import ClusterMember
from monitor.config import RepmonConfig
from monitor.core.config import ConfigError
from monitor.core.db import make_engine, redact_url
from monitor.core.runtime import Backoff, JobSpec, Runtime
from monitor.ingest.imap import ImapError
from monitor.parts import collect_jobs, upgrade_schema

log = logging.getLogger("repmon.daemon")

STOP_GRACE_S = 10.0
LEASE_POLL_S = 0.2  # how often a leased service checks that this node still holds its lease


async def run(config: RepmonConfig, *, once: bool = False, progress: bool = False) -> int:
    try:
        engine = make_engine(config.database_url, echo=config.database.echo, create_dir=config.database.create_dir)
    except ConfigError:
        raise
    try:
        try:
            await asyncio.to_thread(upgrade_schema, engine)
        except Exception as exc:
            log.error("cannot open the database %s: %s: %s", redact_url(config.database_url), type(exc).__name__,
                      str(exc).splitlines()[0] if str(exc) else "")
            return 1
        member = ClusterMember(engine, config.cluster, enabled=config.cluster.enabled_for(config.database_url))
        runtime = Runtime(engine=engine, once=once, progress=progress, logs_as_json=config.logging.as_json,
                          holds=member.holds, node_id=member.node_id)
        jobs = collect_jobs(config, runtime)
        member.want(job.lease for job in jobs if job.lease)
        if not jobs:
            log.warning("nothing to do: the configuration has no mailboxes, folders or other jobs")
        if once:
            return await _run_once(member, runtime, jobs)
        return await _run_daemon(runtime, jobs, member)
    finally:
        engine.dispose()


async def _run_once(member: ClusterMember, runtime: Runtime, jobs: list[JobSpec]) -> int:
    """One pass, in the order the jobs depend on each other (monitor/parts.py):
    a listing found by this pass's blocklist cycle is acted on in this pass."""
    await member.gather_leases()
    try:
        results = []
        for job in jobs:
            if job.lease is not None and not runtime.holds(job.lease):
                log.info("job %s skipped: another node holds %s", job.name, job.lease, extra={"job": job.name})
                continue
            results.append(await _one(job))
    finally:
        await asyncio.to_thread(member.leave)
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


async def _run_daemon(runtime: Runtime, jobs: list[JobSpec], member: ClusterMember) -> int:
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
            if job.lease is not None and not runtime.holds(job.lease):
                return  # another node runs it this time
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
    services.append(asyncio.create_task(member.serve(runtime.stopping), name="cluster:heartbeat"))
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
    """Run a service, restarting it with back-off when it fails. A service
    with a lease runs only while this node holds it: it waits for the lease,
    and is cancelled when the lease is lost (its batches are transactions, so
    what it was doing is either stored or left for the new owner)."""
    assert job.service is not None
    backoff = Backoff(1.0, 300.0)
    while not runtime.stopping.is_set():
        if job.lease is not None and not runtime.holds(job.lease):
            if await runtime.sleep(LEASE_POLL_S):
                return
            continue
        task = asyncio.create_task(job.service(), name=f"{job.name}:run")
        try:
            lost = await _until_done_or_lease_lost(task, job, runtime)
            if lost:
                log.warning("service %s stopped: lease %s is held by another node now", job.name, job.lease,
                            extra={"job": job.name})
                continue
            task.result()
            if runtime.stopping.is_set():
                return
            log.warning("service %s returned unexpectedly; restarting", job.name)
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:
            _log_failure(job, exc)
        delay = backoff.next_delay()
        if await runtime.sleep(delay):
            return


async def _until_done_or_lease_lost(task: asyncio.Task[Any], job: JobSpec, runtime: Runtime) -> bool:
    """Wait for the task; True when it was cancelled because the lease went."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=LEASE_POLL_S)
        if done:
            return False
        if job.lease is not None and not runtime.holds(job.lease) and not runtime.stopping.is_set():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return True
