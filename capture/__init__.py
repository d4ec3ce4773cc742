"""capture: packets -> calls. Sources, link/IP/UDP decoding, SIP, SDP, RTP, call tracking.

Never imports ``storage`` or ``recorderd``; emits into a RecordingSink (see ``sink``)."""
