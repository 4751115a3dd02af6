"""Long-run drivers of the reliability and security battery; assume loopback and free ports.

Used by ``sealgrid bench chaos`` (long variants) and by tests/security (small variants):
:mod:`.market` (seeded households and what a server stored), :mod:`.crash` (SIGKILL and
SIGSTOP at chosen moments, restart, account for every receipt), :mod:`.rush` (many
households at the gate), :mod:`.capture` (a raw loopback capture searched for bid values),
:mod:`.netns` (three servers in separate network namespaces).
"""
