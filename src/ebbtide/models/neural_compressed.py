"""Compressed scoring of `neural`: its point-process network as int8 or ONNX.

Every query of `NeuralModel` but `recommend` starts from the same per-user terms: the GRU
state after the user's last event, the buy burst and conversion share there, and the row
of excitation pairs (last event, each earlier event). Training needs every row; a query
needs only the last one. `PointProcessScorer` computes just that row (O(L) per user
instead of the training network's O(L²)) and runs users in chunks of similar history
length, so little of a chunk is padding. Three runtimes run it:

- ``"torch"``: float32 PyTorch (the exact answers; `NeuralModel` without a scorer gives
  the same numbers through the training network);
- ``"int8"``: dynamic int8 quantisation of its Linear layers and the GRU
  (`torch.ao.quantization.quantize_dynamic`; weights int8, activations quantised on the
  fly). torch 2.13 marks that API deprecated in favour of torchao, which is GPU-first and
  has no quantised GRU;
- ``"onnx"``: the network exported to ONNX (``model.onnx`` in the model folder) and run
  by onnxruntime on the CPU, batch and sequence axes dynamic. The TorchScript exporter is
  used: the dynamo exporter also works in torch 2.13 but took minutes for the GRU on a
  2-core machine against about two seconds.

The next-item head (`recommend`) is not compressed: it keeps the float32 PyTorch network
whatever the runtime; nor does the live service use these runtimes yet. On the Taobao
sample (bench/RESULTS.md "Compressed scoring of neural") ONNX is about 3× faster than
the same network in float32 PyTorch; int8 about as fast as float32 (the GRU's 64-wide
steps gain nothing from int8 and pay a quantisation of input and state per step).

Examples
--------
>>> RUNTIMES
('torch', 'int8', 'onnx')
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ebbtide.errors import ConfigError

if TYPE_CHECKING:
    from ebbtide.models.neural import NeuralModel, _Net, _Sequences

__all__ = [
    "ONNX_FILE",
    "RUNTIMES",
    "LastEventTerms",
    "PointProcessScorer",
    "attach_runtime",
    "export_onnx",
]

RUNTIMES = ("torch", "int8", "onnx")
ONNX_FILE = "model.onnx"
_INPUTS = ("item", "cat", "beh", "gap", "t", "valid", "last")
_OUTPUTS = ("h", "buy", "conversion", "long", "fast")
_OPSET = 17
_CHUNK = 64  # users per run: a chunk's rows are padded to its longest history


@dataclass
class LastEventTerms:
    """What the queries read at each user's last event (users in the order given).

    h : (U, H) GRU states; buy : (U,) the buy burst's excitation sum; conversion : (U,)
    the conversion share ρ; event : (N,) positions of the read events in the sequences'
    arrays, with long and fast : (N,) each event's share of the interest and session
    excitation at the last event.
    """

    h: np.ndarray
    buy: np.ndarray
    conversion: np.ndarray
    event: np.ndarray
    long: np.ndarray
    fast: np.ndarray


class PointProcessScorer(nn.Module):
    """The scoring half of `neural`'s network: the last row of the excitation only.

    Same parameters and maths as ``_Net.encode``, ``excitation``, ``conversion_share``
    read at each sequence's last event; sequences are left-aligned, so a valid event is
    one at or before the last.
    """

    def __init__(self, net: _Net) -> None:
        super().__init__()
        self.net = net

    def forward(
        self,
        item: torch.Tensor,
        cat: torch.Tensor,
        beh: torch.Tensor,
        gap: torch.Tensor,
        t: torch.Tensor,
        valid: torch.Tensor,
        last: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from ebbtide.models.neural import _EXP_MAX, _N_BEH

        net = self.net
        x = torch.cat([net.item(item), net.category(cat), net.behavior(beh), gap], dim=-1)
        pick = torch.arange(item.shape[0])
        h = net.gru(x)[0][pick, last]  # (B, H)
        dt = (t[pick, last][:, None] - t).clamp_min(0.0)  # (B, L)
        cat_j = torch.where(cat > 0, cat - 1, torch.full_like(cat, net.n_categories))
        query = net.scale_query(h).view(h.shape[0], 2, -1)  # (B, 2, r)
        keys = net.scale_keys[:, cat_j]  # (2, B, L, r)
        modulation = (keys * query.transpose(0, 1)[:, :, None, :]).sum(-1)  # (2, B, L)
        log_scale = modulation.clamp(max=_EXP_MAX) + net.scale_bias[:, cat_j]
        log_w = net.log_weight[:, beh]  # (3, B, L)
        zero = torch.zeros((), dtype=t.dtype)

        def kernel(log_size: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
            return torch.where(valid, torch.exp((log_size - delta * dt).clamp(max=_EXP_MAX)), zero)

        fast = kernel(log_scale[0] + log_w[0], net.session_delta()[cat_j])
        long = kernel(log_scale[1] + log_w[1], net.interest_delta()[cat_j])
        buy_scale = net.buy_scale(h).clamp(max=_EXP_MAX)  # (B, 1)
        buy = kernel(buy_scale + log_w[2], net.buy_delta()).sum(-1)
        live = valid.float()
        kinds = (beh[..., None] == torch.arange(_N_BEH)).float() * live[..., None]
        counts = torch.log1p(torch.cat([kinds.sum(1), live.sum(1, keepdim=True)], -1))
        conversion = torch.sigmoid(net.conversion(torch.cat([h, counts], -1))[:, 0])
        return h, buy, conversion, long, fast


def _inputs(seq: _Sequences, start: np.ndarray, end: np.ndarray) -> dict[str, np.ndarray]:
    """The scorer's inputs (numpy) of the event ranges ``[start, end)``, left-aligned."""
    length = int((end - start).max())
    idx = start[:, None] + np.arange(length)
    valid = idx < end[:, None]
    idx = np.where(valid, idx, start[:, None])
    return {
        "item": np.where(valid, seq.item[idx], 0).astype(np.int64),
        "cat": np.where(valid, seq.cat[idx], 0).astype(np.int64),
        "beh": seq.beh[idx].astype(np.int64),
        "gap": (seq.gap[idx] * valid[:, :, None]).astype(np.float32),
        "t": np.where(valid, seq.t[idx] - seq.t[start][:, None], 0.0).astype(np.float32),
        "valid": valid,
        "last": (end - start - 1).astype(np.int64),
    }


class _Runner:
    """Runs a scorer over users in chunks of similar history length."""

    runtime = "torch"

    def __init__(self, chunk: int = _CHUNK) -> None:
        self.chunk = chunk

    def _run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def last_event_terms(
        self, seq: _Sequences, start: np.ndarray, end: np.ndarray
    ) -> LastEventTerms:
        """The terms of the users whose read events are ``[start, end)`` (each non-empty)."""
        n = start.size
        order = np.argsort(end - start, kind="stable")
        h, buy, conversion = None, np.zeros(n), np.zeros(n)
        events, longs, fasts = [], [], []
        for lo in range(0, n, self.chunk):
            sel = order[lo : lo + self.chunk]
            inputs = _inputs(seq, start[sel], end[sel])
            out_h, out_buy, out_conv, out_long, out_fast = self._run(inputs)
            if h is None:
                h = np.zeros((n, out_h.shape[1]), dtype=np.float32)
            h[sel], buy[sel], conversion[sel] = out_h, out_buy, out_conv
            valid = inputs["valid"]
            events.append((start[sel][:, None] + np.arange(valid.shape[1]))[valid])
            longs.append(out_long[valid].astype(np.float64))
            fasts.append(out_fast[valid].astype(np.float64))
        if h is None:
            h = np.zeros((0, 0), dtype=np.float32)
        flat = (np.concatenate(x) if x else np.zeros(0) for x in (events, longs, fasts))
        event, long, fast = flat
        return LastEventTerms(h, buy, conversion, event.astype(np.int64), long, fast)


class _TorchRunner(_Runner):
    def __init__(self, scorer: nn.Module, runtime: str, threads: int | None) -> None:
        super().__init__()
        self.scorer, self.runtime, self.threads = scorer.eval(), runtime, threads

    def _run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                args = [torch.from_numpy(inputs[name]) for name in _INPUTS]
                return [out.float().numpy() for out in self.scorer(*args)]
        finally:
            torch.set_num_threads(before)


class _OnnxRunner(_Runner):
    runtime = "onnx"

    def __init__(self, path: Path, threads: int | None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or _default_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    def _run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(list(_OUTPUTS), inputs)


def _default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def quantised(net: _Net, layers: tuple[type[nn.Module], ...] = (nn.Linear, nn.GRU)) -> nn.Module:
    """An int8 copy of the scorer: `layers` (Linear and the GRU) with int8 weights, their
    inputs quantised per call (the embeddings and the point-process maths stay float)."""
    from torch.ao.quantization import quantize_dynamic

    scorer = PointProcessScorer(copy.deepcopy(net).cpu().float().eval())
    with warnings.catch_warnings():  # deprecated in torch 2.10+ in favour of torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(scorer, set(layers), dtype=torch.qint8)


def export_onnx(model: NeuralModel, path: str | Path) -> Path:
    """Write the model's `PointProcessScorer` as ONNX (dynamic batch and sequence axes).

    Returns the path. Needs the ``onnx`` extra (onnx, onnxruntime).
    """
    _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scorer = PointProcessScorer(copy.deepcopy(model.net_).cpu().float().eval())
    example = _example_inputs(int(model.n_items_), int(model.n_categories_))
    args = tuple(torch.from_numpy(example[name]) for name in _INPUTS)
    axes = {name: {0: "users", 1: "events"} for name in ("item", "cat", "beh", "gap", "t")}
    axes |= {"valid": {0: "users", 1: "events"}, "last": {0: "users"}}
    axes |= {"h": {0: "users"}, "buy": {0: "users"}, "conversion": {0: "users"}}
    axes |= {"long": {0: "users", 1: "events"}, "fast": {0: "users", 1: "events"}}
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():  # the TorchScript exporter is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scorer,
            args,
            str(tmp),
            input_names=list(_INPUTS),
            output_names=list(_OUTPUTS),
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,
        )
    tmp.replace(path)
    return path


def _example_inputs(n_items: int, n_categories: int) -> dict[str, np.ndarray]:
    """Two short sequences of different lengths: the traced graph must not fix either."""
    rng = np.random.default_rng(0)
    users, length = 2, 5
    from ebbtide.models.neural import _N_BEH

    valid = np.arange(length)[None, :] < np.array([[length], [3]])
    return {
        "item": rng.integers(0, n_items + 1, (users, length)),
        "cat": rng.integers(0, n_categories + 1, (users, length)),
        "beh": rng.integers(0, _N_BEH, (users, length)),
        "gap": rng.random((users, length, 2)).astype(np.float32),
        "t": np.cumsum(rng.random((users, length)), 1).astype(np.float32),
        "valid": valid,
        "last": valid.sum(1) - 1,
    }


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(
            "the onnx runtime needs the onnx and onnxruntime packages:"
            " pip install 'ebbtide[onnx]', or score with --runtime torch"
        ) from None


def attach_runtime(
    model: NeuralModel,
    runtime: str,
    *,
    directory: str | Path | None = None,
    threads: int | None = None,
) -> _Runner | None:
    """The runner of `runtime` for `model`'s queries (None: the training network).

    ``"onnx"`` reads ``model.onnx`` from `directory` (the model folder) when it is there
    and newer than the saved network, else exports it there (no `directory`: into a
    temporary folder).
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads!r}: use a whole number >= 1, or leave it out")
    if runtime == "torch":
        return None
    if model._device().type != "cpu":
        raise ConfigError(
            f"the {runtime} runtime scores on the CPU; load the model with device='cpu'"
            " or score with runtime 'torch'"
        )
    if runtime == "int8":
        return _TorchRunner(quantised(model.net_), "int8", threads)
    _require_onnx()
    if directory is None:
        import tempfile

        directory = Path(tempfile.mkdtemp(prefix="ebbtide-onnx-"))
    path = Path(directory) / ONNX_FILE
    network = Path(directory) / "network.pt"  # a model saved again needs a new export
    stale = network.exists() and path.exists() and path.stat().st_mtime < network.stat().st_mtime
    if stale or not path.exists():
        export_onnx(model, path)
    return _OnnxRunner(path, threads)


def float_runner(model: NeuralModel, threads: int | None = None) -> _Runner:
    """The float32 `PointProcessScorer` (the 'torch' runtime's maths, length-sorted
    chunks): what the bench compares the compressed runtimes with, apart from compression."""
    return _TorchRunner(PointProcessScorer(model.net_), "torch", threads)
