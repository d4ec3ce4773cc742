"""Every counter of the service, declared once: its name, help text, kind and where it is shown.

capture/ and storage/ count under these names (a ``Counter`` the pipeline owns, the service's own
counts beside it); they do not import this module (they never import recorderd). What reads the
counters reads this table: the metrics endpoint (every entry), the periodic ``EVENT=stats`` line
(``stats``), the ``status`` overview the console's status page shows (``status``), the snapshots
the period report is made from and its sections (``report``), with the Japanese label beside the
English one where the manager reads it. tests/test_counters_declared.py checks that every name
counted in capture/, storage/ and recorderd/ is declared here and every name here is counted.
"""
from __future__ import annotations

from dataclasses import dataclass

ALWAYS = "always"  # on the stats line: always
NONZERO = "nonzero"  # on the stats line: when not zero (a remote mirror's packets, where one sends them)
NOT_RECORDED = "not_recorded"  # the period report's "calls not recorded"
CAPTURE = "capture"  # the period report's "capture"


@dataclass(frozen=True, slots=True)
class Counter:
    name: str
    help: str  # the metrics' HELP line (English)
    kind: str = "counter"  # or "gauge" (a state, not a count: no _total)
    stats: str = ""  # ALWAYS, NONZERO, or "" (not on the stats line)
    status: bool = False  # in ``status``'s overview (the console's status page)
    report: str = ""  # NOT_RECORDED, CAPTURE, or "" (not in the period report)
    label: tuple[str, str] = ("", "")  # (Japanese, English) where the manager reads it (the report)


C = Counter
TABLE: tuple[Counter, ...] = (
    # -- the capture: what came ---------------------------------------------------------------------
    C("packets", "Packets read from the capture", stats=ALWAYS),
    C("sip_messages", "SIP messages read", stats=ALWAYS),
    C("sip_invites", "SIP INVITE requests and responses to them read (call signalling: capture/unrecognised.py)"),
    # -- calls ----------------------------------------------------------------------------------------
    C("calls_designated", "Inbound calls to designated numbers seen", stats=ALWAYS),
    C("calls_recorded", "Recordings kept (a conversation kept in parts counts each part)", stats=ALWAYS, status=True,
      report=CAPTURE, label=("録音した通話", "Calls recorded")),
    C("recording_parts_codec_change", "Recording parts begun by a codec change mid-call (each part its own recording)"),
    C("recording_parts_capped", "Calls that reached the most parts a call may have (64): the rest kept in the last part's codec"),
    C("calls_transferred", "Calls recorded as the next part of a recorded conversation after a transfer (REFER, Replaces)"),
    C("calls_transfer_not_followed", "Transfers of recorded calls not followed: to an outside number not designated (REFERs)"),
    C("calls_not_designated", "Calls not recorded: not to a designated number", stats=ALWAYS, report=NOT_RECORDED,
      label=("指定番号以外", "Not a designated number")),
    C("calls_not_inbound", "Calls not recorded: not from the trunk side", report=NOT_RECORDED,
      label=("着信以外", "Not inbound")),
    C("calls_second_leg", "Designated calls not recorded again: a B2BUA's second leg of a call recorded (linked to it)",
      report=NOT_RECORDED, label=("録音中の通話の二次区間（B2BUA）", "Second leg of a call recorded (B2BUA)")),
    C("calls_other_leg", "Designated calls not recorded again: an SBC's other face of a call recorded (linked to it)",
      report=NOT_RECORDED, label=("録音中の通話の別の面（SBC）", "Another face of a call recorded (SBC)")),
    C("calls_other_leg_unsure", "Designated calls recorded that may be an SBC's other face of another: both kept, linked as unsure"),
    C("calls_transferred_in", "Calls to a designated number not recorded: transferred from a call not recorded (Referred-By, Replaces)",
      report=NOT_RECORDED, label=("録音対象外の通話からの転送", "Transferred from a call not recorded")),
    C("calls_unanswered", "Designated calls not recorded: unanswered, no media", stats=ALWAYS, report=NOT_RECORDED,
      label=("応答なし", "Unanswered")),
    C("calls_codec_unsupported", "Designated calls not recorded: no audio in a codec the recorder decodes",
      report=NOT_RECORDED, label=("非対応の符号化方式", "Codec not supported")),
    C("calls_lost_store_full", "Designated calls lost: store full", stats=ALWAYS, status=True, report=NOT_RECORDED,
      label=("保存領域の不足", "Store full")),
    C("calls_over_capacity", "Designated calls not tracked or dropped unanswered: call table or a source's share full",
      stats=ALWAYS, report=NOT_RECORDED, label=("同時通話数の上限超過", "Over capacity")),
    C("kernel_packets", "Packets the kernel's ring counted (the capture's own count)", status=True, report=CAPTURE,
      label=("受信パケット", "Packets received")),
    C("kernel_drops", "Packets the kernel dropped (ring full)", stats=ALWAYS, status=True, report=CAPTURE,
      label=("取りこぼしたパケット", "Packets dropped by the kernel")),
    C("ring_malformed", "Capture ring blocks whose walk led off the ring (their whole packets kept)"),
    # -- SIP ------------------------------------------------------------------------------------------
    C("sip_malformed", "Malformed SIP messages dropped", stats=ALWAYS, report=CAPTURE, label=("不正な SIP", "Malformed SIP")),
    C("sip_header_not_utf8", "SIP messages with a header that is not UTF-8 (read as latin-1, kept)"),
    C("sip_dialog_unknown", "SIP re-INVITEs of a dialog never seen begin: ignored"),
    C("sip_tls", "TLS handshakes on the SIPS port: SIP over TLS cannot be read"),
    C("sip_truncated", "SIP messages cut short by the capture: counted, not parsed"),
    C("sdp_malformed", "Malformed SDP bodies: no media learned from them"),
    C("srtp_media", "SDP audio offers of SRTP (encrypted media): that audio cannot be recorded"),
    # -- media ----------------------------------------------------------------------------------------
    C("rtp_malformed", "Malformed RTP packets dropped", stats=ALWAYS, report=CAPTURE, label=("不正な RTP", "Malformed RTP")),
    C("rtp_other_source", "RTP packets dropped: from another address than the call's sender", stats=ALWAYS),
    C("mirror_duplicates", "SIP messages and RTP packets of recorded calls dropped: a second mirror session's copies",
      stats=ALWAYS),
    C("rtp_other_source_after_end", "RTP packets from another address than the call's sender after the call ended"),
    C("rtp_before_recording_start", "RTP packets of recorded calls before the recording began (before the answer)"),
    C("rtp_not_recorded", "RTP packets of media no recorded call uses (not kept)"),
    C("rtcp", "RTCP packets (not kept)"),
    C("rtp_truncated", "RTP packets of recorded calls cut short by the capture: captured bytes kept, the rest silence"),
    C("rtp_truncated_header", "RTP packets of recorded calls cut short inside their RTP header: dropped"),
    C("media_endpoints_over_limit", "Media addresses not followed: a call's limit of addresses reached"),
    C("media_endpoint_taken_over", "Media addresses taken over by a newer call (the older call's stream let go)"),
    C("media_source_learned", "RTP senders learned after the SDP's address (NAT, a media relay)"),
    # -- IP, fragments, TCP -----------------------------------------------------------------------------
    C("ip_fragment", "IP fragments read", stats=ALWAYS),
    C("ip_fragment_malformed", "IP fragments dropped: header malformed"),
    C("ip_reassembled_not_udp", "Reassembled IP datagrams that are not UDP (not kept)"),
    C("fragments_reassembled", "IP datagrams reassembled from fragments"),
    C("fragments_atomic", "IP fragments that were a whole datagram (offset 0, no more fragments)"),
    C("fragments_duplicate", "IP fragments dropped: a copy of one already held"),
    C("fragments_malformed", "IP fragments dropped: offset or length invalid"),
    C("fragments_oversize", "IP datagrams given up: reassembled larger than an IP datagram may be"),
    C("fragments_timeout", "IP datagrams given up: a fragment missing past the timeout"),
    C("fragments_inconsistent", "IP datagrams given up: fragments disagree on the end"),
    C("fragments_overlap", "IP datagrams given up: overlapping fragments that differ"),
    C("fragments_evicted", "IP datagrams given up: too many pending reassembly (oldest let go)"),
    C("tcp_messages", "SIP messages read from TCP streams", stats=ALWAYS),
    C("tcp_malformed", "TCP segments dropped: header malformed"),
    C("tcp_unusable", "TCP segments not followed: truncated or fragmented"),
    C("tcp_not_sip", "TCP segments dropped: not SIP, of no stream followed"),
    C("tcp_retransmission", "TCP segments already seen (retransmissions): not read twice"),
    C("tcp_gap_skipped", "TCP streams that lost bytes (a gap): read on from the next SIP start line"),
    C("tcp_bytes_skipped", "TCP stream bytes skipped: not part of a SIP message read"),
    C("tcp_message_too_large", "SIP messages on TCP given up: larger than the buffer"),
    C("tcp_sip_unframed", "SIP messages on TCP given up: no Content-Length to frame them"),
    C("tcp_stream_evicted", "TCP streams given up: too many followed (oldest let go)"),
    C("tcp_stream_expired", "TCP streams given up: idle past the timeout"),
    C("evidence_frames_over_cap", "Frames of a reassembled SIP message not kept in the evidence pcap: over 64 a datagram or TCP stream"),
    # -- what is not understood -------------------------------------------------------------------------
    C("truncated", "Packets cut short by the capture inside their link, IP or UDP header (or malformed so)"),
    C("unknown_linktype", "Packets of a link type the recorder does not read"),
    C("not_ip", "Frames that are not IP (MPLS, ARP, LLDP, ...)"),
    C("not_udp", "IP packets neither UDP nor TCP nor a remote mirror's GRE"),
    C("udp_other", "UDP datagrams neither RTP nor SIP nor a remote mirror's"),
    C("capture_unrecognised", "Packets not understood: not IP, IP not UDP/TCP, UDP neither RTP nor SIP, or an encapsulation not opened",
      stats=ALWAYS),
    C("capture_unrecognised_standing", "1 while most traffic is not understood or no SIP is seen", kind="gauge"),
    C("kernel_filtered", "Frames the kernel's filter left out (not IPv4/IPv6: MPLS, ARP, ...): the interface's count less the capture's",
      stats=ALWAYS),
    # -- remote SPAN (capture/encap.py) ----------------------------------------------------------------
    C("encap_erspan1", "Remote SPAN packets opened: ERSPAN type I", stats=NONZERO),
    C("encap_erspan2", "Remote SPAN packets opened: ERSPAN type II", stats=NONZERO),
    C("encap_erspan3", "Remote SPAN packets opened: ERSPAN type III", stats=NONZERO),
    C("encap_gretap", "Remote SPAN packets opened: GRE transparent Ethernet bridging (gretap)", stats=NONZERO),
    C("encap_vxlan", "Remote SPAN packets opened: VXLAN", stats=NONZERO),
    C("encap_tzsp", "Remote SPAN packets opened: TZSP", stats=NONZERO),
    C("encap_not_opened", "Encapsulated packets not opened: encapsulation not enabled or not from a collector", stats=NONZERO),
    C("encap_malformed", "Encapsulated packets dropped: header cut short or invalid, or nested too deep", stats=NONZERO),
    # -- the store and the control socket ---------------------------------------------------------------
    C("erasures", "Recordings erased by retention", stats=ALWAYS),
    C("keep_failures", "Finished calls the store could not keep (left in the spool, recovered at the next start)",
      stats=ALWAYS, status=True),
    C("control_refused_busy", "recorderctl connections refused: every request slot taken"),
    C("control_refused_uid_limit", "recorderctl connections refused: that uid had its share of the slots"),
    C("control_request_timeouts", "recorderctl requests cut off: not whole within the request deadline"),
)
del C

BY_NAME = {c.name: c for c in TABLE}
STATS_ALWAYS = tuple(c.name for c in TABLE if c.stats == ALWAYS)
STATS_NONZERO = tuple(c.name for c in TABLE if c.stats == NONZERO)
STATUS = tuple(c.name for c in TABLE if c.status)
REPORT = {section: tuple(c.name for c in TABLE if c.report == section) for section in (NOT_RECORDED, CAPTURE)}
SNAPSHOT = tuple(name for names in REPORT.values() for name in names)  # what the period report is made from
ENCAP = tuple(c.name for c in TABLE if c.name.startswith("encap_"))  # a remote mirror's packets (capture/encap.py)
CONTROL = tuple(c.name for c in TABLE if c.name.startswith("control_"))  # the control socket's own (recorderd/control.py)
LABELS = {c.name: c.label for c in TABLE if c.label[0]}
