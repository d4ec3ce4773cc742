"""Types of capture/_fastpath.c (the per-packet kernel; docs/hot-path.md)."""
from typing import Any

MAX_SNAPLEN: int
SEQ_WINDOW: int
MIRROR_RING: int
MIRROR_WINDOW_S: float
RTCP_PT_FIRST: int
RTCP_PT_LAST: int

Packet = tuple[float, int, bytes]

def read_pcap(buf: Any, off: int, big_endian: int, scale: float, linktype: int,
              batch_size: int) -> tuple[list[Packet], int, tuple[int, str] | None]: ...
def ring_block(buf: Any, off: int, num: int, end: int = ...) -> tuple[list[Packet], int]: ...

class Lanes:
    @property
    def bufs(self) -> tuple[bytearray, bytearray]: ...
    frontier: int
    limit: int
    silence: int

class Records:
    @property
    def buf(self) -> bytearray: ...
    limit: int
    linktype: int

class StreamCore:
    channel: int
    ssrc: int | None
    base_ts: int
    base_pos: int
    end: int
    max_seq: int
    seen: int
    ext_max: int
    received: int
    packets: int
    duplicates: int
    jitter: float
    last_transit: float | None
    last_arrival: float
    max_gap: float
    learned: bool
    source: tuple[bytes, int] | None
    other_source: int
    mirror_duplicates: int
    def arm(self, audio_pt: int, t0: float, clock: float, drift_limit: float, lanes: Lanes,
            records: Records | None = None) -> None: ...
    def disarm(self) -> None: ...
    def mirror_copy(self, ts: float, seq: int, rtp_ts: int, ssrc: int, pt: int, payload: bytes, cut: int = 0) -> int: ...

class FastPath:
    handled: int
    def set(self, address: bytes, port: int, stream: object) -> None: ...
    def discard(self, address: bytes, port: int) -> None: ...
    def run(self, batch: list[Packet], i: int, now: float, next_tick: float) -> tuple[int, float, Any]: ...
    def take_not_recorded(self) -> int: ...
    def take_other_source(self) -> int: ...
    def set_encap(self, mask: int, collectors: Any) -> None: ...
    def take_encap(self) -> tuple[int, int, int, int]: ...
    def __len__(self) -> int: ...
