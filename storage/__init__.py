"""storage: calls -> kept records. WAV writing, the store, index, retention, audit.

Never imports ``capture`` or ``recorderd``; implements capture's RecordingSink by structure."""
