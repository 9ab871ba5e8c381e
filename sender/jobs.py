"""The sender's jobs for `repmon run`: the delivery service and, when
[sender.unsubscribe] is configured, the one-click unsubscribe endpoint.

Nothing is started without a [sender] section (`config` is None): a
monitor-only installation does not poll the queue."""

from __future__ import annotations

import logging
from collections.abc import Callable

from monitor.core.runtime import JobSpec, Runtime
from sender.coordinator import Sender
from sender.settings import SenderConfig
from sender.shared_limits import SharedLimits
from sender.unsubscribe import serve, token_maker

log = logging.getLogger("repmon.sender")


def provide(config: SenderConfig | None, runtime: Runtime, shared: Callable[[], SharedLimits] | None = None
            ) -> list[JobSpec]:
    """The sender's jobs; `config` is the [sender] section, None when the file has none.
    `shared` makes the cluster-wide lane limits (several nodes on one database)."""
    if config is None:
        return []
    sender_config = config

    def make_sender() -> Sender:
        return Sender(sender_config, runtime.engine, shared=shared() if shared is not None else None)

    async def deliver_service() -> None:
        await make_sender().run(stop=runtime.stopping)

    async def deliver_once() -> None:
        stats = await make_sender().run(until_idle=True)
        log.info("sender pass done", extra={"delivered": stats.delivered, "deferred": stats.deferred,
                                            "bounced": stats.bounced, "suppressed": stats.suppressed})

    jobs = [JobSpec(name="sender:delivery", run=deliver_once, service=deliver_service)]
    if config.unsubscribe is not None:
        unsubscribe = config.unsubscribe

        async def unsubscribe_service() -> None:
            await serve(runtime.engine, unsubscribe, runtime.stopping)

        async def unsubscribe_check() -> None:
            # `--once` serves no HTTP; its pass checks that links can be made and verified.
            token_maker(unsubscribe)

        jobs.append(JobSpec(name="sender:unsubscribe", run=unsubscribe_check, service=unsubscribe_service))
    return jobs
