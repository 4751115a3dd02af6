"""The one door from the service to the secure clearing; assumes it lives in sealgrid.protocol.

The service never looks inside a share payload and never computes a market result itself.
At gate closure each server hands its stored payloads, in the agreed order (sorted by
pseudonym), to the party-side clearing routine of :mod:`sealgrid.protocol`, run in a child
process (MPyC keeps one runtime per process and reads its options at start-up; a child can
also be killed when a peer hangs, which MPyC itself never notices).

The interface expected from the protocol layer (:data:`PROTOCOL_ENTRY`)::

    def clear_period(*, party: int, peers: Sequence[str], period: str,
                     payloads: Sequence[bytes], suppliers: Sequence[str],
                     config_dir: Path, timeout: float) -> result

``peers`` are ``"host:port"`` of every MPyC party by index (this party's own included);
``config_dir`` holds this party's MPyC TLS files (made by ``sealgrid.protocol.certs``);
``result`` has ``public`` (a JSON-ready dict: price, clearing level, volume, or no trade),
``household`` (one ``bytes`` per payload, in order: this party's share of that household's
output), ``suppliers`` (supplier id -> this party's share of its totals) and ``region``
(``bytes``: this party's share of the region totals). Until the protocol layer provides it,
:func:`clear` raises :class:`ClearingUnavailable` and the period is recorded as failed — the
service never makes up a result.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealgrid.service.wire import b64d, b64e

PROTOCOL_ENTRY = "sealgrid.protocol.party:clear_period"


class ClearingUnavailable(Exception):
    """The secure clearing routine is not installed (sealgrid.protocol lacks it)."""


class ClearingFailed(Exception):
    """The secure clearing ran but did not finish (a peer hung, crashed or refused)."""


@dataclass(frozen=True)
class ClearingRequest:
    """What one server hands the clearing for one period."""

    party: int
    peers: tuple[str, ...]
    period: str
    payloads: tuple[bytes, ...]
    suppliers: tuple[str, ...]
    config_dir: Path
    timeout: float


@dataclass(frozen=True)
class ClearingResult:
    """What comes back: public results and this party's output shares."""

    public: Mapping[str, Any]
    household: tuple[bytes, ...]
    suppliers: Mapping[str, bytes]
    region: bytes


def protocol_entry() -> Callable[..., Any]:
    """Return the protocol's party-side clearing function.

    Raises:
        ClearingUnavailable: sealgrid.protocol does not provide it.
    """
    module_name, _, attr = PROTOCOL_ENTRY.partition(":")
    try:
        module = importlib.import_module(module_name)
        func: Callable[..., Any] = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ClearingUnavailable(f"{PROTOCOL_ENTRY} is not available: {exc}") from exc
    return func


def _encode_request(req: ClearingRequest) -> bytes:
    return json.dumps(
        {
            "party": req.party,
            "peers": list(req.peers),
            "period": req.period,
            "payloads": [b64e(p) for p in req.payloads],
            "suppliers": list(req.suppliers),
            "config_dir": str(req.config_dir),
            "timeout": req.timeout,
        }
    ).encode()


def _decode_result(raw: bytes, n: int) -> ClearingResult:
    data = json.loads(raw)
    household = tuple(b64d(x) for x in data["household"])
    if len(household) != n:
        raise ClearingFailed(f"the clearing returned {len(household)} outputs for {n} bids")
    return ClearingResult(
        public=dict(data["public"]),
        household=household,
        suppliers={k: b64d(v) for k, v in data["suppliers"].items()},
        region=b64d(data["region"]),
    )


async def clear(req: ClearingRequest) -> ClearingResult:
    """Run this party's part of the secure clearing in a child process.

    Raises:
        ClearingUnavailable: the protocol routine is missing.
        ClearingFailed: it failed or ran past ``req.timeout``.
    """
    protocol_entry()  # fail fast, in this process, with a clear message
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sealgrid.service.clearing",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(req.config_dir),
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(_encode_request(req)), timeout=req.timeout + 5
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ClearingFailed(f"no result within {req.timeout:.0f} s (a peer may be down)") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ClearingFailed(f"the clearing process exited with {proc.returncode}: {tail[0]}")
    try:
        return _decode_result(out, len(req.payloads))
    except (ValueError, KeyError, TypeError) as exc:
        raise ClearingFailed(f"unreadable clearing result: {exc}") from exc


def _child() -> int:
    """Run inside the child: read the request on stdin, write the result on stdout."""
    data = json.loads(sys.stdin.buffer.read())
    func = protocol_entry()
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # MPyC prints progress; keep stdout for the result only
    result = func(
        party=data["party"],
        peers=data["peers"],
        period=data["period"],
        payloads=[b64d(p) for p in data["payloads"]],
        suppliers=data["suppliers"],
        config_dir=Path(data["config_dir"]),
        timeout=float(data["timeout"]),
    )
    sys.stdout = real_stdout
    household: Sequence[bytes] = result.household
    out = {
        "public": result.public,
        "household": [b64e(bytes(x)) for x in household],
        "suppliers": {k: b64e(bytes(v)) for k, v in result.suppliers.items()},
        "region": b64e(bytes(result.region)),
    }
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover - runs in the child process
    sys.exit(_child())
