"""Zero-code instrumentation of PyTorch (entry point ``mlmon_torch``): calls of ``torch.nn.Module`` in eval mode.

Only the outermost module call is an operation (its submodules run inside it), and modules in training mode
are never recorded (that is ``fit`` for torch). The task is unknown unless ``instrument_model`` says it; then
outputs are read as probabilities, or as logits (softmax / sigmoid) when they are not.
"""

from __future__ import annotations

from typing import Any

from otel_mlmon import semconv
from otel_mlmon.instrumentation._base import MlInstrumentor
from otel_mlmon.instrumentation._outputs import RAW
from otel_mlmon.instrumentation._runtime import RUNTIME
from otel_mlmon.instrumentation._wrap import make_wrapper


def recordable(module: Any) -> bool:
    return not getattr(module, "training", False)


class TorchInstrumentor(MlInstrumentor):
    system = semconv.SYSTEM_TORCH
    module = "torch.nn"
    dependencies = ("torch >= 2.1",)

    def patch(self) -> None:
        from torch import nn

        RUNTIME.wrap(nn.Module, "__call__",
                     make_wrapper(semconv.OPERATION_FORWARD, RAW, self.system, recordable=recordable), self.who)
