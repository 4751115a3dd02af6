"""Long-run drivers of the reliability and security battery; assume loopback and free ports.

Test harness, not part of the installed package (kill -9, network namespaces, raw sockets,
raw SQL, a fuzzer). Used by ``sealgrid bench chaos`` from a source checkout (long variants,
through :mod:`.bench`) and by tests/security (small variants): :mod:`.market` (seeded
households and what a server stored), :mod:`.crash` (SIGKILL and SIGSTOP at chosen moments,
restart, account for every receipt), :mod:`.rush` (many households at the gate),
:mod:`.capture` (a raw loopback capture searched for bid values), :mod:`.curious` (the
curious-server statistic), :mod:`.fuzz` (a seeded mutation fuzzer), :mod:`.netns` (three
servers in separate network namespaces).
"""
