"""The delivery-log part's daemon jobs: one interval job per [[delivery_logs]]
source ("mtalogs:<name>"), each pass reading what is new (in a worker thread:
file reads and database writes block), and a daily prune of the KumoMTA hook
ledger. A failing pass is logged by the daemon and retried at the next
interval; its batch was rolled back, so nothing is lost or counted twice."""

from __future__ import annotations

import asyncio
import logging

from monitor.core.runtime import JobSpec, Runtime
from monitor.mtalogs.ingest import PassResult, SourceReader, prune_hook_ledger
from monitor.mtalogs.settings import DeliveryLogConfig, check_unique_names

log = logging.getLogger("repmon.mtalogs")


def provide(sections: list[DeliveryLogConfig], runtime: Runtime) -> list[JobSpec]:
    check_unique_names(sections)
    # path "-": journald piped into `repmon delivery-logs pipe`, not a daemon job
    jobs = [_source_job(section, runtime) for section in sections if str(section.path) != "-"]
    jobs.append(JobSpec("mtalogs:prune-hook-ledger", lambda: asyncio.to_thread(prune_hook_ledger, runtime.engine),
                        interval_s=86400.0))
    return jobs


def _source_job(section: DeliveryLogConfig, runtime: Runtime) -> JobSpec:
    reader = SourceReader(runtime.engine, section)

    async def one_pass() -> PassResult:
        result = await asyncio.to_thread(reader.run_pass)
        if result.lines:
            stored = result.stored
            log.info("delivery log read: %d lines, %d outcomes, %d events, %d suppressions, %d rejected",
                     result.lines, stored.deliveries, stored.events, stored.suppressions, stored.rejected,
                     extra={"source": reader.name})
        return result

    return JobSpec(f"mtalogs:{reader.name}", one_pass, interval_s=section.interval_s)
