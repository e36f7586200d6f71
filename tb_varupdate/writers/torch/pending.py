"""Records kept on the device and read by the host every few records, without waiting for the device.

A record is measured and folded on the tensors' device (`record`);
reading it on the host at once would make the host wait for the device at
every step (a `.cpu()` per record cost GPT-2 on an H200 about 11% of its
step). So records go into a preallocated device ring of `read_every` slots,
and when it is full (or at `flush`) the host starts one non-blocking copy of
the ring into pinned memory and records a CUDA event. The copy completes
while training goes on; the records are handed to the writer once the event
says so (`poll`, at each later record), or when `flush` waits for it (at
`close()`, before rows join, at exit). On the CPU the same schedule runs with
a plain copy, complete at once.
"""

import torch

READ_EVERY_ACCELERATOR = 32


class _Transfer:
    """One copy of records from the device ring to the host, and the steps they were taken at."""

    def __init__(self, ring, count, steps):
        self.steps = steps
        if ring.device.type == "cuda":
            self.host = torch.empty((count,) + tuple(ring.shape[1:]), dtype=ring.dtype, pin_memory=True)
            self.host.copy_(ring[:count], non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            # Other accelerators copy synchronously; the CPU's "copy" is the ring itself, cloned.
            self.host = ring[:count].to("cpu", copy=True)
            self.event = None

    def done(self):
        return self.event is None or self.event.query()

    def wait(self):
        if self.event is not None:
            self.event.synchronize()  # waits for this copy, not for the work queued after it

    def records(self):
        """(step, int32 NumPy record) of each record copied; the one host read of the records."""
        return list(zip(self.steps, self.host.numpy()))


class PendingRecords:
    """A ring of `capacity` records on the device, read back every `capacity` records.

    Args:
      capacity: records per read (`read_every`).
      deliver: called with each list of `(step, record)` once it is on the host, oldest first.
    """

    def __init__(self, capacity, deliver):
        self.capacity = capacity
        self._deliver = deliver
        self._ring, self._steps, self._transfers = None, [], []

    def __len__(self):
        """Records taken and not yet delivered."""
        return len(self._steps) + sum(len(t.steps) for t in self._transfers)

    def add(self, record, step):
        """Keeps one record (int32 [1 + rows, columns] on the device) taken at `step`."""
        if self._ring is None or self._ring.shape[1:] != record.shape or self._ring.device != record.device:
            self.flush()
            self._ring = torch.empty((self.capacity,) + tuple(record.shape), dtype=record.dtype, device=record.device)
        self._ring[len(self._steps)].copy_(record)
        self._steps.append(int(step))
        if len(self._steps) == self.capacity:
            self._start()
        self.poll()

    def _start(self):
        if self._steps:
            self._transfers.append(_Transfer(self._ring, len(self._steps), self._steps))
            self._steps = []

    def poll(self):
        """Delivers the transfers that have completed, in order; never waits."""
        while self._transfers and self._transfers[0].done():
            self._deliver(self._transfers.pop(0).records())

    def flush(self):
        """Reads every pending record now (waiting for the device) and delivers it."""
        self._start()
        while self._transfers:
            transfer = self._transfers.pop(0)
            transfer.wait()
            self._deliver(transfer.records())
