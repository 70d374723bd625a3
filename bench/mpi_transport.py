"""How to carry one exchange step over MPI: the choice behind
ddir.server.mpi.MpiExchange, measured.

Every rank sends a small payload (60 bytes, an exchange step of a small
tick) to every other rank, ROUNDS times; rank 0 computes WORK seconds
before each step, as a worker with more data would. Three ways, each waited
for as ddir waits (ddir.server.mpi._wait):

* p2p:    Isend to each peer, Improbe + Mrecv from each
* counts: Ialltoall of the sizes, then Ialltoallv of the bytes
* slots:  one Ialltoall of fixed 512-byte slots (what ddir does)

    mpiexec -n 3 python bench/mpi_transport.py [ROUNDS] [WORK]
"""

import sys
import time

import numpy as np

from ddir.server.mpi import SLOT, Ranks, _wait, leave

ranks = Ranks()
MPI, comm = ranks.MPI, ranks.data
me, n = comm.Get_rank(), comm.Get_size()
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
work = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0002
payload = bytes(60)
peers = [p for p in range(n) if p != me]


def p2p():
    requests = [comm.Isend([payload, MPI.BYTE], dest=p, tag=7) for p in peers]
    status = MPI.Status()
    for p in peers:
        message = _wait(lambda: comm.Improbe(source=p, tag=7, status=status))
        data = bytearray(status.Get_count(MPI.BYTE))
        message.Recv([data, MPI.BYTE])
    _wait(lambda: MPI.Request.Testall(requests))


def counts():
    sizes = np.full(n, len(payload), dtype=np.int64)
    sizes[me] = 0
    got = np.empty(n, dtype=np.int64)
    _wait(comm.Ialltoall(sizes, got).Test)
    sdispl = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rdispl = np.concatenate(([0], np.cumsum(got)[:-1]))
    out = bytearray(payload * len(peers))
    into = bytearray(int(got.sum()))
    _wait(comm.Ialltoallv([out, sizes, sdispl, MPI.BYTE], [into, got, rdispl, MPI.BYTE]).Test)


send, recv = bytearray(n * SLOT), bytearray(n * SLOT)


def slots():
    for p in peers:
        send[p * SLOT:p * SLOT + len(payload)] = payload
    _wait(comm.Ialltoall([send, SLOT, MPI.BYTE], [recv, SLOT, MPI.BYTE]).Test)


for name, step in (("p2p", p2p), ("counts", counts), ("slots", slots)):
    comm.Barrier()
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        if me == 0 and work:
            end = time.perf_counter() + work
            while time.perf_counter() < end:
                pass
        step()
    wall = time.perf_counter() - start
    cpu = comm.gather(time.process_time() - cpu)
    if me == 0:
        print(f"{name:7s} -n {n}: {wall / rounds * 1e6:7.1f} us a step "
              f"(rank 0 computes {work * 1e6:.0f} us of it); CPU s per rank "
              f"{' '.join(f'{c:.2f}' for c in cpu)}", flush=True)
ranks.finalize()
leave(0)
