"""Status (everyone; the technician's page) and the public notice (Art. 4(1))."""
from __future__ import annotations

from starlette.responses import Response

from ..web import EVERYONE, Req, page


@page("/status", EVERYONE)
async def status(r: Req) -> Response:
    reply = await r.call("status")
    if reply.rc != 0:
        return r.refused(reply)
    return r.render("status.html", status_data=reply.data or {})


@page("/notice", EVERYONE)
async def notice(r: Req) -> Response:
    reply = await r.call("notice")
    if reply.rc != 0:
        return r.refused(reply)
    return r.render("notice.html", notice=reply.data or {}, text=reply.text)
