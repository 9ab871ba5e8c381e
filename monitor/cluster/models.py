"""The cluster's tables. Times are seconds since the epoch (float): leases and
budgets compare them across nodes, so nodes need synchronised clocks (NTP), as
any distributed lease does."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, String
from sqlmodel import Field, SQLModel


class ClusterNode(SQLModel, table=True):
    __tablename__ = "cluster_nodes"

    node_id: str = Field(sa_column=Column(String(64), primary_key=True))
    host: str = Field(sa_column=Column(String(255), nullable=False))
    pid: int = Field(sa_column=Column(Integer, nullable=False))
    started_at: float = Field(sa_column=Column(Float, nullable=False))
    heartbeat_at: float = Field(sa_column=Column(Float, nullable=False, index=True))


class ClusterLease(SQLModel, table=True):
    """One job's owner. `epoch` grows at every change of owner, so a node can
    tell that it lost a lease in between two of its renewals."""

    __tablename__ = "cluster_leases"

    name: str = Field(sa_column=Column(String(255), primary_key=True))
    owner: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    expires_at: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    acquired_at: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    epoch: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


class LaneBudget(SQLModel, table=True):
    """A lane's shared rate state (GCRA theoretical arrival time) and daily count."""

    __tablename__ = "cluster_lane_budgets"

    lane: str = Field(sa_column=Column(String(255), primary_key=True))
    tat: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    day: str = Field(default="", sa_column=Column(String(10), nullable=False))
    day_count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: float = Field(default=0.0, sa_column=Column(Float, nullable=False))


class LaneConnectionClaim(SQLModel, table=True):
    """Connections one node holds on a lane, until `expires_at` unless renewed."""

    __tablename__ = "cluster_lane_connections"

    lane: str = Field(sa_column=Column(String(255), primary_key=True))
    node_id: str = Field(sa_column=Column(String(64), primary_key=True))
    connections: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    expires_at: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
