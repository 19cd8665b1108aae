"""The MXNet Gluon backend: unifparam's primitives on Gluon blocks.

References to parameters are ``(block, attribute)`` pairs: ``block._reg_params[attr]`` is
the Parameter the block's forward reads, so re-pointing it ties two uses. States map onto
Gluon's own: no known shape (``in_units=0``) is deferred, a complete shape without data is
abstract (Gluon's deferred init after shape inference), data is materialized.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, nd
from mxnet.gluon import Block, HybridBlock, Parameter

from unifparam import Backend, NativeParam, Plan, nn
from unifparam.backend import (
    ABSTRACT,
    DEFAULT,
    DEFERRED,
    MATERIALIZED,
    default_loss,
    numpy_input,
    to_numpy,
)
from unifparam.errors import UnsupportedError

from ._adopt import describe, known_shape, native_param
from ._layers import native_attr, to_gluon

Ref = tuple[Block, str]
CPU = mx.cpu()


def default_init() -> mx.init.Initializer:
    """Gluon's default initializer (``block.initialize()``): weights U(-0.07, 0.07); biases,
    betas and running means 0; gammas and running variances 1 (each Parameter's own init)."""
    return mx.init.Uniform()


class MXNetBackend(Backend):
    """MXNet Gluon adapter: spec layers become deferred Gluon blocks; values move as numpy."""

    name = "mxnet"
    capabilities = frozenset({"adopt", "abstract", "transpose_tie", "gradients", "native_apply"})
    #: Gluon's NDArrays hold no bfloat16 nor float8 (MXNet 1.9 has no such dtype)
    storage_dtypes = frozenset({"float64", "float32", "float16"})

    # ---- construction ---------------------------------------------------------------
    def build(self, spec: nn.Layer) -> tuple[HybridBlock, dict[str, NativeParam]]:
        """Layers whose shapes the spec gives get Gluon's default values now (eager, as
        ``net.initialize()`` does); the others stay deferred."""
        block = to_gluon(spec)
        natives: dict[str, NativeParam] = {}
        for path, layer in nn.first_uses(spec):
            sub = _block_at(block, path)
            if sub._reg_params and all(_complete(p) for p in sub._reg_params.values()) \
                    and not isinstance(layer, nn.Block):  # a block's are the core's, seeded
                for param in sub._reg_params.values():
                    _init_data(param, _default_values(param))
            for decl in layer.param_decls():
                attr = native_attr(sub, decl.name)
                natives[nn.join(path, decl.name)] = native_param(
                    sub, attr, nn.join(path, decl.name), nn.join(path, attr))
        return block, natives

    def adopt(self, native: Block) -> tuple[Block, Any]:
        return native, describe(native)

    # ---- size and storage ------------------------------------------------------------
    def infer(self, native: Block, inputs: Sequence[Any] | None,
              input_shapes: Sequence[Any]) -> Block:
        """Adopted blocks: Gluon's symbolic shape inference (no parameter memory).

        A plain ``Block`` has no symbolic form: it runs imperatively, with each of its
        outermost ``HybridBlock`` parts replaced by shape inference and zeros of its output
        shape. Parameters a plain Block reads itself get zeros for that run (then none
        again); one of unknown shape there cannot be inferred (UnsupportedError)."""
        if inputs is not None:
            args = [_as_nd(x) for x in inputs]
        else:
            args = [nd.zeros(tuple(s)) for s in input_shapes]
        if isinstance(native, HybridBlock):
            native.infer_shape(*args)
        else:
            with _shape_run(native):
                native(*args)
        _clear_graphs(native)
        return native

    def allocate(self, native: Block, plan: Plan) -> Block:
        """Set every planned shape; then Gluon's default values where the plan says DEFAULT
        (unless abstract). Storages the core writes next get their data from ``write``;
        ties hold meanwhile, since a tie is one Parameter object."""
        ctx = _context(plan.device) if plan.device is not None else None
        for storage in plan.storages.values():
            param = _param(storage.ref)
            param._unifparam_planned = True  # a block's own parameter: abstract from now
            if ctx is not None:
                param._unifparam_ctx = ctx  # where write() gives it its first data
            if known_shape(param) != storage.shape:
                param.shape = storage.shape
            if not plan.abstract and storage.fill == DEFAULT and param._data is None:
                _init_data(param, _default_values(param), ctx or CPU)
        _clear_graphs(native)
        return native

    def status(self, native: Block, ref: Ref) -> tuple[tuple[int | None, ...] | None, str]:
        param = _param(ref)
        shape = known_shape(param)
        if param._data is not None:
            return shape, MATERIALIZED
        if getattr(ref[0], "_unifparam", None) is not None and not getattr(
                param, "_unifparam_planned", False):
            return shape, DEFERRED  # a block's own parameter: no storage until planned
        # a size Gluon infers is known for a whole layer at once: until then, all deferred
        return shape, (ABSTRACT if all(map(_complete, ref[0]._reg_params.values())) else DEFERRED)

    def read(self, native: Block, ref: Ref) -> np.ndarray:
        param = _param(ref)
        return param.data(param.list_ctx()[0]).asnumpy()

    def write(self, native: Block, ref: Ref, value: np.ndarray) -> Block:
        param = _param(ref)
        if param._data is None:
            ctx = getattr(param, "_unifparam_ctx", CPU)
            _init_data(param, nd.array(value, dtype=param.dtype, ctx=ctx), ctx)
        else:
            param.set_data(value)  # copies into the existing NDArray
        return native

    def reset(self, native: Block, refs: Sequence[Ref]) -> Block:
        for ref in refs:
            param = _param(ref)
            param.set_data(_default_values(param))
        return native

    def alias(self, native: Block, src: Ref, dst: Ref, transpose: bool) -> Block:
        (sb, sa), (db, da) = src, dst
        param, old = sb._reg_params[sa], db._reg_params[da]
        if old is not param:
            db._reg_params[da] = param
            if db.__dict__.get(da) is old:  # Dense keeps it as an attribute too
                db.__dict__[da] = param
            owned = db.params._params
            if owned.get(old.name) is old:  # collect_params() must list the root only
                del owned[old.name]
                owned[param.name] = param
        if transpose:
            _transpose_input(db, da)
        _clear_graphs(native)
        return native

    def dtype_of(self, native: Block, ref: Ref) -> Any:
        return np.dtype(_param(ref).dtype)

    def cast(self, native: Block, ref: Ref, dtype: str) -> Block:
        """Gluon's own ``Parameter.cast`` (values, gradient buffer and declared dtype)."""
        _param(ref).cast(dtype)
        _clear_graphs(native)
        return native

    def native_object(self, native: Block, ref: Ref) -> Parameter:
        return _param(ref)

    def native_layer(self, native: Block, path: str) -> Block:
        return _block_at(native, path)

    # ---- devices ---------------------------------------------------------------------
    def devices(self) -> list[str]:
        return ["cpu:0", *(f"gpu:{i}" for i in range(mx.context.num_gpus()))]

    def placeable(self, device: str) -> bool:
        """Any ``cpu:N`` (Gluon's ``mx.cpu(N)`` contexts all live in host memory)."""
        return device in self.devices() or device.startswith("cpu:")

    def device_name(self, device: Any) -> str | None:
        if not isinstance(device, mx.Context):
            return None
        kind = "gpu" if device.device_type == "gpu" else "cpu"
        return f"{kind}:{device.device_id}"

    def native_device(self, device: str) -> mx.Context:
        return _context(device)

    def device_of(self, native: Block, ref: Ref) -> str | None:
        param = _param(ref)
        if param._data is None:
            return None
        return ",".join(str(self.device_name(c)) for c in param.list_ctx())

    def move(self, native: Block, device: str) -> Block:
        """Every Parameter with data (a tie is one Parameter object) onto ``device``:
        Gluon's ``reset_ctx`` keeps its data, ``grad_req`` and dtype."""
        ctx = _context(device)
        params = {id(p): p for b in _blocks(native) for p in b._reg_params.values()}
        for param in params.values():
            param._unifparam_ctx = ctx
            if param._data is not None and param.list_ctx() != [ctx]:
                param.reset_ctx(ctx)
        _clear_graphs(native)
        return native

    # ---- compute -------------------------------------------------------------------
    def run(self, native: Block, inputs: Sequence[Any], training: bool) -> tuple[Any, Block]:
        mode = autograd.train_mode() if training else autograd.predict_mode()
        with mode, _float16_ops():
            out = native(*_inputs(native, inputs))
            out.wait_to_read() if isinstance(out, nd.NDArray) else None  # errors raise here
            return out, native

    def gradients(self, native: Block, inputs: Sequence[Any],
                  loss: Callable[[Any], Any] | None, refs: Mapping[str, Ref],
                  training: bool = False) -> Any:
        params = {n: _param(ref) for n, ref in refs.items()}
        for p in params.values():
            if p.grad_req != "null":
                p.zero_grad()  # a parameter the output does not use keeps no stale gradient
        xs = _inputs(native, inputs)
        with autograd.record(train_mode=training), _float16_ops():
            out = native(*xs)
            value = loss(out) if loss is not None else default_loss(
                out, nd.sum, lambda x: np.dtype(x.dtype).kind == "f")
            value.wait_to_read()
        with _float16_ops():
            value.backward()
        out = {n: (np.zeros(p.shape, np.float32) if p.grad_req == "null"
                   else p.grad(p.list_ctx()[0]).asnumpy()) for n, p in params.items()}
        return (out, native) if training else out  # statistics updated in place


def _param(ref: Ref) -> Parameter:
    return ref[0]._reg_params[ref[1]]


def _complete(param: Parameter) -> bool:
    shape = known_shape(param)
    return shape is not None and None not in shape


def _block_at(block: Block, path: str) -> Block:
    for key in filter(None, path.split(".")):
        block = block._children[key]
    return block


def _blocks(block: Block) -> list[Block]:
    """Every block of the tree once, pre-order."""
    seen: dict[int, Block] = {}
    stack = [block]
    while stack:
        b = stack.pop()
        if id(b) not in seen:
            seen[id(b)] = b
            stack.extend(reversed(list(b._children.values())))
    return list(seen.values())


def _default_values(param: Parameter) -> nd.NDArray:
    """What Gluon's ``initialize()`` would give ``param``: its own ``init``, else the one a
    pending native ``initialize(init)`` chose, else :func:`default_init`."""
    init, default = param.init, default_init()
    if param._deferred_init:
        init, _, default, _ = param._deferred_init
    data = nd.zeros(param.shape, dtype=param.dtype)
    desc = mx.init.InitDesc(param.name, {"__init__": init})
    initializer = mx.init.create(default)
    try:
        initializer(desc, data)
    except ValueError:  # a name without a known suffix (weight, bias, gamma, ...)
        initializer._init_weight(desc, data)
    return data


def _init_data(param: Parameter, data: nd.NDArray, ctx: mx.Context = CPU) -> None:
    """Give ``param`` its first data (on ``ctx``), as Gluon's deferred init does."""
    param._deferred_init = ()
    with autograd.pause():
        param._init_impl(data, [ctx])


def _clear_graphs(root: Block) -> None:
    """Drop cached symbolic graphs and CachedOps: they captured the old Parameters."""
    for block in _blocks(root):
        if isinstance(block, HybridBlock):
            block._clear_cached_op()


def _transpose_input(block: Block, attr: str) -> None:
    """Make ``block``'s forward read the transpose of its Parameter ``attr``."""
    marked = block.__dict__.get("_unifparam_transposed")
    if marked is None:
        marked = block.__dict__["_unifparam_transposed"] = set()
        inner = block.hybrid_forward

        def hybrid_forward(F: Any, x: Any, *args: Any, **params: Any) -> Any:  # noqa: N803
            for k in marked:
                params[k] = F.transpose(params[k])
            return inner(F, x, *args, **params)

        block.__dict__["hybrid_forward"] = hybrid_forward
    marked.add(attr)


def _outermost_hybrid(block: Block) -> list[HybridBlock]:
    """The HybridBlocks of a Block tree that have no HybridBlock above them."""
    if isinstance(block, HybridBlock):
        return [block]
    return [h for child in block._children.values() for h in _outermost_hybrid(child)]


@contextlib.contextmanager
def _shape_run(root: Block) -> Iterator[None]:
    """Context for a shape-only imperative run of a plain Block (see ``infer``)."""
    own = [(b, a, p) for b in _blocks(root) if not isinstance(b, HybridBlock)
           for a, p in b._reg_params.items() if p._data is None]
    unknown = [a for _, a, p in own if not _complete(p)]
    if unknown:
        raise UnsupportedError(
            f"Cannot infer the shape of {', '.join(map(repr, unknown))}: a plain Gluon Block "
            f"reads it in Python code, which has no symbolic form. Give its shape in the "
            f"Block, or make the Block a HybridBlock.")
    patched = _outermost_hybrid(root)
    pending = [p._deferred_init for _, _, p in own]
    try:
        for _, _, p in own:
            _init_data(p, nd.zeros(p.shape, dtype=p.dtype))
        for block in patched:
            block.__dict__["forward"] = _shape_only(block)
        with autograd.predict_mode():
            yield
    finally:
        for block in patched:
            block.__dict__.pop("forward", None)
        for (_, _, p), deferred in zip(own, pending):
            p._data, p._grad, p._deferred_init = None, None, deferred


def _shape_only(block: HybridBlock) -> Callable[..., Any]:
    """A forward for ``block`` that infers its parameter shapes and returns zeros of its
    output shape, computing nothing and allocating no parameter."""
    def forward(*args: Any) -> Any:
        block.infer_shape(*args)
        inputs, out = block._get_graph(*args)
        _, shapes, _ = out.infer_shape(**{v.name: a.shape for v, a in zip(inputs, args)})
        outs = [nd.zeros(s) for s in shapes]
        return outs[0] if len(outs) == 1 else outs
    return forward


@contextlib.contextmanager
def _float16_ops() -> Iterator[None]:
    """Gluon's CPU operators that have no float16 kernel (FullyConnected needs cuDNN) raise
    a typed UnsupportedError naming the fix, not MXNet's engine error."""
    try:
        yield
    except mx.base.MXNetError as e:
        text = str(e)
        half = ("float16", "fp16")
        if not any(h in text.lower() for h in half):
            raise
        for _ in range(8):  # drain the engine: a failed op's dependents fail asynchronously,
            try:            # and would surface at the next model's first sync point
                nd.waitall()
                break
            except mx.base.MXNetError:
                continue
        line = next((x for x in text.splitlines() if any(h in x.lower() for h in half)),
                    text).strip()
        raise UnsupportedError(
            f"MXNet cannot run this model in float16 here: {line[:160]}. Gluon stores "
            f"float16 parameters, but on CPU computes float16 only in some operators; cast "
            f"to float32 to run: unifparam.cast(net, 'float32').") from None


def _inputs(native: Block, inputs: Sequence[Any]) -> list[nd.NDArray]:
    """The inputs as NDArrays where the model is, floating ones in the dtype of its first
    floating parameter (Gluon's operators take one dtype: a float16 model, float16 inputs)."""
    ctx = _model_context(native)
    xs = [_as_nd(x, ctx) for x in inputs]
    dtype = next((np.dtype(p.dtype) for p in native.collect_params().values()
                  if np.dtype(p.dtype).kind == "f"), None)
    return [x.astype(dtype) if dtype is not None and np.dtype(x.dtype).kind == "f"
            and np.dtype(x.dtype) != dtype else x for x in xs]


def _as_nd(x: Any, ctx: mx.Context | None = None) -> nd.NDArray:
    """An input as an NDArray on ``ctx`` (default the CPU): numpy and other frameworks'
    arrays through the host."""
    ctx = ctx or CPU
    if isinstance(x, nd.NDArray):
        return x if x.context == ctx else x.as_in_context(ctx)
    arr = numpy_input(to_numpy(x) if hasattr(x, "shape") and not isinstance(x, np.ndarray)
                      else x)
    return nd.array(arr, dtype=arr.dtype, ctx=ctx)


def _context(device: str) -> mx.Context:
    """``"cpu:1"`` -> ``mx.cpu(1)``, ``"gpu:0"`` -> ``mx.gpu(0)``."""
    kind, _, index = device.partition(":")
    return (mx.gpu if kind == "gpu" else mx.cpu)(int(index or 0))


def _model_context(native: Block) -> mx.Context | None:
    """Where the model's first Parameter with data is: inputs go there."""
    for block in _blocks(native):
        for param in block._reg_params.values():
            if param._data is not None:
                return param.list_ctx()[0]
    return None
