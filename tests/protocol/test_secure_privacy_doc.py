"""docs/privacy.md lists exactly the values the secure clearing code opens."""

from __future__ import annotations

import re
from pathlib import Path

from sealgrid.protocol.disclosure import DISCLOSED

ROOT = Path(__file__).resolve().parents[2]
CALL = re.compile(r"reveal(?:_shares)?\(\s*(\(?\s*\"[^)]*?\"\s*,?\s*(?:\"[^\"]*\"\s*,?\s*)*\)?)")


def code_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "sealgrid" / "protocol").glob("*.py"):
        if path.name.startswith(("pem", "paillier")) or path.name == "disclosure.py":
            continue
        for match in CALL.finditer(path.read_text()):
            names.update(re.findall(r"\"([a-z_]+)\"", match.group(1)))
    return names


def doc_names() -> set[str]:
    text = (ROOT / "docs" / "privacy.md").read_text()
    return set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE))


def test_code_doc_and_table_agree() -> None:
    assert code_names() == set(DISCLOSED)
    assert doc_names() == set(DISCLOSED)


def test_the_grep_sees_every_call() -> None:
    """Guard the guard: the pattern finds single and tuple names."""
    sample = 'await reveal("volume", x, o)\nreveal_shares(("a_b", "c"), own, f)'
    found = {n for m in CALL.finditer(sample) for n in re.findall(r"\"([a-z_]+)\"", m.group(1))}
    assert found == {"volume", "a_b", "c"}


def test_no_opening_bypasses_the_door() -> None:
    """Outside the door, no MPyC output, and the servers' message primitives are called only
    by the transports themselves and by the one clock line-up (which sends zeros)."""
    calls = re.compile(r"\.output\(|\btransfer\(|\ball_to_all\(")
    allowed = {
        ("party.py", "    async def all_to_all(self, own: np.ndarray) -> list[np.ndarray]:"),
        ("party.py", "    await net.all_to_all(np.zeros(1, dtype=F.U64))  # line the parties' "
                     "clocks up"),
        ("inprocess.py", "    async def all_to_all(self, own: np.ndarray) -> list[np.ndarray]:"),
        ("billing.py", "    await net.all_to_all(np.zeros(1, dtype=F.U64))  # line the parties' "
                       "clocks up"),
    }
    found = set()
    for path in (ROOT / "sealgrid" / "protocol").glob("*.py"):
        if path.name == "disclosure.py":
            continue
        for line in path.read_text().splitlines():
            transport = path.name == "party.py" and "self.mpc.transfer(" in line
            if calls.search(line) and not transport:
                found.add((path.name, line))
    assert found == allowed
