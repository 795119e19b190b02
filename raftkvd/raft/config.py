"""Knobs of the consensus core, with defaults."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ELECTION_TICK = 10
DEFAULT_HEARTBEAT_TICK = 1
DEFAULT_MAX_SIZE_PER_MSG = 1 << 20
DEFAULT_MAX_INFLIGHT_MSGS = 256
DEFAULT_MAX_APPLY_BYTES = 8 << 20


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: int
    peers: tuple[int, ...] = ()
    """The initial voters; used only when storage holds no membership yet."""
    election_tick: int = DEFAULT_ELECTION_TICK
    election_tick_max: int = 0
    """Randomized timeouts fall in [election_tick, election_tick_max); 0 means 2 * election_tick."""
    heartbeat_tick: int = DEFAULT_HEARTBEAT_TICK
    applied: int = 0
    max_size_per_msg: int = DEFAULT_MAX_SIZE_PER_MSG
    max_inflight_msgs: int = DEFAULT_MAX_INFLIGHT_MSGS
    max_apply_bytes: int = DEFAULT_MAX_APPLY_BYTES
    pre_vote: bool = True
    check_quorum: bool = True

    def validate(self) -> None:
        if self.id <= 0:
            raise ConfigError("id must be positive")
        if self.heartbeat_tick <= 0:
            raise ConfigError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election_tick must be greater than heartbeat_tick")
        if self.election_tick_max and self.election_tick_max <= self.election_tick:
            raise ConfigError("election_tick_max must be greater than election_tick")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs must be positive")

    @property
    def randomized_election_max(self) -> int:
        return self.election_tick_max or 2 * self.election_tick
