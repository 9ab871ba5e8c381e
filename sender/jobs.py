"""The sender's jobs for `repmon run`: the delivery service and, when
[sender.unsubscribe] is configured, the one-click unsubscribe endpoint.

Nothing is started for a config without a [sender] section: a monitor-only
installation does not poll the queue."""

from __future__ import annotations

import logging

from monitor.config import RepmonConfig
from monitor.core.runtime import JobSpec, Runtime

log = logging.getLogger("repmon.sender")


def provide(config: RepmonConfig, runtime: Runtime) -> list[JobSpec]:
    if "sender" not in config.model_fields_set:
        return []
    from sender.engine import Sender

    async def deliver_service() -> None:
        sender = Sender(config.sender, runtime.engine)
        await sender.run(stop=runtime.stopping)

    async def deliver_once() -> None:
        stats = await Sender(config.sender, runtime.engine).run(until_idle=True)
        log.info("sender pass done", extra={"delivered": stats.delivered, "deferred": stats.deferred,
                                            "bounced": stats.bounced, "suppressed": stats.suppressed})

    jobs = [JobSpec(name="sender:delivery", run=deliver_once, service=deliver_service)]
    if config.sender.unsubscribe is not None:
        from sender.unsubscribe import serve, token_maker

        unsubscribe = config.sender.unsubscribe

        async def unsubscribe_service() -> None:
            await serve(runtime.engine, unsubscribe, runtime.stopping)

        async def unsubscribe_check() -> None:
            # `--once` serves no HTTP; its pass checks that links can be made and verified.
            token_maker(unsubscribe)

        jobs.append(JobSpec(name="sender:unsubscribe", run=unsubscribe_check, service=unsubscribe_service))
    return jobs
