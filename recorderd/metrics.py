"""A Prometheus text endpoint on loopback (off unless ``metrics.listen`` is set).

The main loop publishes a snapshot once a second; the HTTP thread only reads the last snapshot, so
it never touches the pipeline's state.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COUNTERS = {
    "packets": "Packets read from the capture",
    "kernel_drops": "Packets the kernel dropped (ring full)",
    "calls_designated": "Inbound calls to designated numbers seen",
    "calls_recorded": "Recordings kept (a conversation kept in parts counts each part)",
    "recording_parts_codec_change": "Recording parts begun by a codec change mid-call (each part its own recording)",
    "calls_not_designated": "Calls not recorded: not to a designated number",
    "calls_not_inbound": "Calls not recorded: not from the trunk side",
    "calls_unanswered": "Designated calls not recorded: unanswered, no media",
    "calls_lost_store_full": "Designated calls lost: store full",
    "calls_over_capacity": "Designated calls not tracked or dropped unanswered: call table or a source's share full",
    "calls_other_leg": "Designated calls not recorded again: an SBC's other face of a call recorded (linked to it)",
    "calls_other_leg_unsure": "Designated calls recorded that may be an SBC's other face of another: both kept, linked as unsure",
    "calls_transferred": "Calls recorded as the next part of a recorded conversation after a transfer (REFER, Replaces)",
    "calls_transferred_in": "Calls to a designated number not recorded: transferred from a call not recorded (Referred-By, Replaces)",
    "sip_malformed": "Malformed SIP messages dropped",
    "sip_header_not_utf8": "SIP messages with a header that is not UTF-8 (read as latin-1, kept)",
    "rtp_malformed": "Malformed RTP packets dropped",
    "rtp_other_source": "RTP packets dropped: from another address than the call's sender",
    "rtp_truncated": "RTP packets of recorded calls cut short by the capture: captured bytes kept, the rest silence",
    "rtp_truncated_header": "RTP packets of recorded calls cut short inside their RTP header: dropped",
    "sip_truncated": "SIP messages cut short by the capture: counted, not parsed",
    "mirror_duplicates": "SIP messages and RTP packets of recorded calls dropped: a second mirror session's copies",
    "encap_erspan1": "Remote SPAN packets opened: ERSPAN type I",
    "encap_erspan2": "Remote SPAN packets opened: ERSPAN type II",
    "encap_erspan3": "Remote SPAN packets opened: ERSPAN type III",
    "encap_gretap": "Remote SPAN packets opened: GRE transparent Ethernet bridging (gretap)",
    "encap_vxlan": "Remote SPAN packets opened: VXLAN",
    "encap_tzsp": "Remote SPAN packets opened: TZSP",
    "encap_not_opened": "Encapsulated packets not opened: encapsulation not enabled or not from a collector",
    "encap_malformed": "Encapsulated packets dropped: header cut short or invalid, or nested too deep",
    "capture_unrecognised": "Packets not understood: not IP, IP not UDP/TCP, UDP neither RTP nor SIP, or an encapsulation not opened",
    "kernel_filtered": "Frames the kernel's filter left out (not IPv4/IPv6: MPLS, ARP, ...): the interface's count less the capture's",
    "evidence_frames_over_cap": "Frames of a reassembled SIP message not kept in the evidence pcap: over 64 a datagram or TCP stream",
    "erasures": "Recordings erased by retention",
    "control_refused_busy": "recorderctl connections refused: every request slot taken",
    "control_refused_uid_limit": "recorderctl connections refused: that uid had its share of the slots",
    "control_request_timeouts": "recorderctl requests cut off: not whole within the request deadline",
}


class MetricsServer:
    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.body = b""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)
        self.thread.start()

    def publish(self, counters: Mapping[str, int], active_calls: int, health: Any) -> None:
        lines = []
        for key, help_text in COUNTERS.items():
            lines += [f"# HELP recorderd_{key}_total {help_text}", f"# TYPE recorderd_{key}_total counter",
                      f"recorderd_{key}_total {counters.get(key, 0)}"]  # fmt: skip
        lines += ["# HELP recorderd_capture_unrecognised_standing 1 while most traffic is not understood or no SIP is seen",
                  "# TYPE recorderd_capture_unrecognised_standing gauge",
                  f"recorderd_capture_unrecognised_standing {counters.get('capture_unrecognised_standing', 0)}"]  # fmt: skip
        lines += ["# TYPE recorderd_active_calls gauge", f"recorderd_active_calls {active_calls}",
                  "# TYPE recorderd_store_free_bytes gauge", f"recorderd_store_free_bytes {health.free_bytes}"]  # fmt: skip
        self.body = ("\n".join(lines) + "\n").encode()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
