"""``python -m recorderd.demo CONFIG OUT``: the bundled config for ``make run``, acting as whoever runs
it — that user's group is given every role (recorderctl refuses a user in no role group, root too),
the control socket sits beside the demo store instead of in /run, and the trunk side is that of the
bundled captures."""
from __future__ import annotations

import grp
import os
import sys

import yaml

from .config import load

ROLES = ("manager", "staff", "technician", "auditor")
# The carrier side of the bundled captures (pcap_fixtures/generator.py: TRUNK and the IPv6 call's
# SBC): calls from there are inbound, the rest (an extension dialling out) are not recorded.
DEMO_TRUNK = ["203.0.113.0/24", "2001:db8:5::/48"]


def main(argv: list[str]) -> int:
    source, out = argv
    config = load(source)
    group = grp.getgrgid(os.getgid()).gr_name
    demo = {
        "capture": {"trunk_networks": config["capture.trunk_networks"] or DEMO_TRUNK},
        "store": {"path": config.store_path},
        "dids_file": config["dids_file"],
        "vault": {"key_file": config["vault.key_file"]},
        "control": {"socket": os.path.join(os.path.dirname(os.path.abspath(out)), "control.sock")},
        "roles": {f"{role}_group": group for role in ROLES},
    }
    with open(out, "w", encoding="utf-8") as f:
        f.write("# Made by `make run` from %s for the user running the demo. Do not install.\n" % source)
        yaml.safe_dump(demo, f, allow_unicode=True, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
