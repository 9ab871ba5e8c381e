"""Settings of the cluster: [cluster]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from monitor.core.config import Section


class ClusterConfig(Section):
    # "auto": shared limits, leases and a leader when the database is PostgreSQL
    # (several nodes can share it); a SQLite database has one node by nature.
    mode: Literal["auto", "on", "off"] = "auto"
    node_name: str | None = Field(default=None, max_length=64)  # default: host-pid-random
    heartbeat_s: float = Field(default=2.0, gt=0, le=60)  # leases and the node row are renewed this often
    lease_ttl_s: float = Field(default=6.0, gt=0, le=600)  # a dead node's jobs move after this
    # A lane's budget is granted in slots of this many seconds of its rate: one
    # database transaction per slot per node instead of one per message.
    budget_slice_s: float = Field(default=0.5, gt=0, le=10)

    @model_validator(mode="after")
    def _ttl_covers_heartbeats(self) -> ClusterConfig:
        if self.lease_ttl_s < 2 * self.heartbeat_s:
            raise ValueError("lease_ttl_s must be at least twice heartbeat_s (one missed beat must not lose a lease)")
        return self

    def enabled_for(self, database_url: str) -> bool:
        if self.mode == "auto":
            return database_url.startswith(("postgresql", "postgres"))
        return self.mode == "on"
