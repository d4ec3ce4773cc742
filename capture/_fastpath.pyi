"""Types of capture/_fastpath.c (the per-packet kernel; docs/hot-path.md)."""
from collections.abc import Iterator, Sequence
from typing import Any, overload

MAX_SNAPLEN: int
SEQ_WINDOW: int
MIRROR_RING: int
MIRROR_WINDOW_S: float
RTCP_PT_FIRST: int
RTCP_PT_LAST: int

Packet = tuple[float, int, bytes]

class Frames(Sequence[Packet]):
    """One batch described in place (a buffer on the file's mmap or the ring block, and per packet
    its time, offset and length); each tuple made when asked for."""
    @property
    def released(self) -> bool: ...
    def release(self) -> None: ...
    def detach(self) -> None: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, i: int) -> Packet: ...
    @overload
    def __getitem__(self, i: slice) -> list[Packet]: ...
    def __iter__(self) -> Iterator[Packet]: ...

def read_pcap(buf: Any, off: int, big_endian: int, scale: float, linktype: int,
              batch_size: int) -> tuple[Frames, int, tuple[int, str] | None]: ...
def ring_block(buf: Any, off: int, num: int, end: int = ...) -> tuple[Frames, int]: ...

class Lanes:
    @property
    def bufs(self) -> tuple[bytearray, bytearray]: ...
    frontier: int
    limit: int
    silence: int
    def interleaved(self, size: int, extra: int = ...) -> bytearray: ...

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
    def run(self, batch: list[Packet] | Frames, i: int, now: float, next_tick: float) -> tuple[int, float, Any]: ...
    def take_not_recorded(self) -> int: ...
    def take_other_source(self) -> int: ...
    def set_encap(self, mask: int, collectors: Any) -> None: ...
    def take_encap(self) -> tuple[int, int, int, int]: ...
    def __len__(self) -> int: ...
