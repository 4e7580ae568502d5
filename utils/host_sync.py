"""Counting the places where the host waits for the device: every operator whose result the host needs (a tensor
read as a Python number or bool, an output whose size depends on the values, a boolean-mask index, a copy from a
device to the host). On a GPU each one stops the CPU from queueing work ahead; on a CPU they cost nothing but are
counted all the same, so CPU tests can assert there are none. (``Tensor.tolist`` reads memory without an operator
and is not seen.)
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}
HOST_READS = {  # the device-to-host reads (a Python scalar) and the value-dependent output sizes
    aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default, aten.nonzero.default,
    aten.masked_select.default, aten._unique2.default, aten.unique_consecutive.default, aten.unique_dim.default,
    aten.repeat_interleave.Tensor, aten.allclose.default,
}


class HostSyncCounter(TorchDispatchMode):
    """Inside the block, ``counts`` records each host read by operator name (``total`` sums them).

        with HostSyncCounter() as syncs:
            step()
        assert syncs.total == 0, syncs.counts
    """

    def __init__(self):
        super().__init__()
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_READS:
            self.counts[func.overloadpacket.__name__] += 1
        elif func in INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.counts["boolean index"] += 1
        elif func is aten._to_copy.default and args[0].device.type != "cpu" and \
                torch.device(kwargs.get("device") or args[0].device).type == "cpu":
            self.counts["copy to host"] += 1
        elif func is aten.copy_.default and args[0].device.type == "cpu" and args[1].device.type != "cpu":
            self.counts["copy to host"] += 1
        return func(*args, **kwargs)
