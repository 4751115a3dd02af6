"""``GET /status``: a small read-only HTML page about one computation server.

Plain server-rendered HTML with an inline style and nothing else: no script, no external
asset (the Content-Security-Policy allows none). It shows what :mod:`sealgrid.service.metrics`
may show: the last periods whose gate has closed with their status and price (from the
signed statements, public anyway), whether each is settled, the peers as last probed, and the
refusals by reason as published at the last period boundary. No bid data, nothing per
household, no count of an open period.
"""

from __future__ import annotations

import datetime as dt
from html import escape

from aiohttp import web

from sealgrid.service.metrics import MONITOR_KEY, Monitor, PeriodRow
from sealgrid.service.schedule import iso

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { border: 1px solid #bbb; padding: 0.2rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #175e17; } .bad { color: #a11; font-weight: bold; }
.note { color: #555; font-size: 0.9rem; }
"""

#: Headers of the page: no script, no asset, no caching, no framing.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _cell(text: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(text))}</td>"


def _periods(rows: list[PeriodRow] | None) -> str:
    if rows is None:
        return '<p class="bad">The database could not be read.</p>'
    if not rows:
        return "<p>No period's gate has closed yet.</p>"
    out = ["<table id=\"periods\"><tr><th>period</th><th>status</th><th>price (¢/kWh)</th>"
           "<th>settled</th><th>reason</th></tr>"]
    for r in rows:
        cls = "bad" if r.status == "failed" else ("ok" if r.status == "cleared" else "")
        out.append(
            "<tr>" + _cell(r.period) + _cell(r.status, cls)
            + _cell(r.price if r.price is not None else "—", "num price")
            + _cell("yes" if r.settled else "no") + _cell(r.reason) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _peers(monitor: Monitor) -> str:
    out = ['<table id="peers"><tr><th>peer</th><th>address</th><th>up</th><th>last seen</th>'
           "<th>last error</th></tr>"]
    for j, state in sorted(monitor.peers.items()):
        seen = Monitor.peer_json(state)["last_seen"] or "never"
        out.append(
            "<tr>" + _cell(f"server {j}") + _cell(monitor.server.cfg.servers[j])
            + _cell("up" if state.up else "down", "ok" if state.up else "bad")
            + _cell(seen) + _cell(state.last_error) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _refusals(monitor: Monitor) -> str:
    released = monitor.released
    last = released.refusals if released is not None else {}
    reasons = sorted(set(last) | set(monitor.refusals_total))
    when = ("no period boundary has passed since the server started" if released is None
            else f"in the window {iso(released.start)} – {iso(released.end)}")
    out = [f'<p class="note">Counts are published at each period boundary, for the window '
           f"before it (no count moves while households bid); last: {escape(when)}.</p>"]
    if not reasons:
        out.append("<p>No refusals published.</p>")
        return "".join(out)
    out.append('<table id="refusals"><tr><th>reason</th><th>last window</th>'
               "<th>since start</th></tr>")
    for reason in reasons:
        out.append("<tr>" + _cell(reason) + _cell(last.get(reason, 0), "num")
                   + _cell(monitor.refusals_total.get(reason, 0), "num") + "</tr>")
    out.append("</table>")
    return "".join(out)


def render(monitor: Monitor, rows: list[PeriodRow] | None, database: bool) -> str:
    """The page's HTML."""
    server = monitor.server
    party = server.cfg.party
    released = monitor.released
    peak = released.queue_peak if released is not None else 0
    now = iso(server.clock().astimezone(dt.UTC).replace(microsecond=0))
    db = ('<span class="ok">reachable</span>' if database
          else '<span class="bad">not reachable</span>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>sealgrid server {party}</title>"
        "<meta name=\"viewport\" content=\"width=device-width\">"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>sealgrid server {party}</h1>"
        f"<p>{escape(now)} · database {db} · writer queue peak in the last window: {peak}"
        f" · {len(server.cfg.servers)} servers · <a href=\"/metrics\">metrics</a>"
        " · <a href=\"/healthz\">health</a></p>"
        f"<h2>Periods</h2>{_periods(rows)}"
        f"<h2>Peers</h2>{_peers(monitor)}"
        f"<h2>Refusals</h2>{_refusals(monitor)}"
        "</body></html>\n"
    )


async def page(request: web.Request) -> web.Response:
    """GET /status: the page."""
    monitor = request.app[MONITOR_KEY]
    monitor.release()
    await monitor.counts()  # several workers: every worker's refusals, summed
    rows = await monitor.recent_periods()
    return web.Response(text=render(monitor, rows, rows is not None), content_type="text/html",
                        charset="utf-8", headers=HEADERS)
