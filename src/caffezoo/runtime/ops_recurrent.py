"""ONNX for Caffe's recurrent layers, LSTM and RNN (LRCN, video captioning), unrolled over time.

Caffe unrolls them itself (``recurrent_layer.cpp``); so does this, step by
step, with the same parameters and the same sequence-continuation markers:
``cont[t, n] = 0`` starts a new sequence for stream ``n`` at step ``t``, which
zeroes the previous hidden state (and, for LSTM, the previous cell) before use.

- LSTM (``lstm_layer.cpp`` + ``LSTMUnit``): gates = W_xc x_t + b_c (+ W_xc_static
  x_static) + W_hc (cont_t h_{t-1}), split in Caffe's order i, f, o, g;
  c_t = cont_t f c_{t-1} + i g; h_t = o tanh(c_t). Blobs: W_xc, b_c,
  [W_xc_static], W_hc.
- RNN (``rnn_layer.cpp``): h_t = tanh(W_xh x_t + b_h (+ W_xh_static x_static) +
  W_hh (cont_t h_{t-1})); o_t = tanh(W_ho h_t + b_o). Blobs: W_xh, b_h,
  [W_xh_static], W_hh, W_ho, b_o.

With ``expose_hidden`` the initial state comes from the extra bottoms (h0,
and c0 for LSTM) and the final one goes to the extra tops; otherwise it
starts at zero. The time axis (axis 0) is unrolled, so the graph has a fixed
size along it.
"""

from __future__ import annotations

import numpy as np

from ._emit import Ctx, emits

__all__ = []  # the layer rules register themselves with @emits; nothing here is called by name


def _check(layer) -> str | None:
    if layer.type_param.num_output < 1:
        return "num_output must be 1 or more"
    return None


@emits("LSTM", "RNN", check=_check)
def recurrent(ctx: Ctx) -> None:
    p = ctx.p
    lstm = ctx.layer.type == "LSTM"
    states = (2 if lstm else 1) if p.expose_hidden else 0
    x_shape = ctx.shapes[0]
    t, n, h = x_shape[0], x_shape[1], p.num_output
    static = len(ctx.x) - 2 - states == 1
    ctx.batch_dependent("a recurrent layer unrolls over axis 0, which is time, not the batch")
    expected = [tuple(s) for s in (ctx.layer.param_shapes or [])]
    got = [tuple(np.shape(b)) for b in ctx.blobs]
    if got != expected:
        raise ctx.fail(
            f"blobs of shapes {got} where Caffe expects {expected} "
            f"({'W_xc, b_c, [W_xc_static], W_hc' if lstm else 'W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o'})"
        )
    gates = 4 * h if lstm else h
    d = int(np.prod(x_shape[2:]))
    # Input projections of every step at once: (T, N, D) x (D, G) + b.
    x = ctx.op("Reshape", ctx.x[0], ctx.const("x_shape", [t, n, d]), step="x")
    w_x = ctx.weight(0, "w_x", np.asarray(ctx.blobs[0], np.float32).reshape(gates, d).T)
    projected = ctx.op("Add", ctx.op("MatMul", x, w_x, step="x_proj"), ctx.weight(1, "b"), step="x_proj_b")
    if static:  # the same static input at every step: (N, Ds) x (Ds, G), broadcast over T
        s_shape = ctx.shapes[2]
        ds = int(np.prod(s_shape[1:]))
        xs = ctx.op("Reshape", ctx.x[2], ctx.const("static_shape", [n, ds]), step="static")
        w_s = ctx.weight(2, "w_static", np.asarray(ctx.blobs[2], np.float32).reshape(gates, ds).T)
        projected = ctx.op(
            "Add", projected, ctx.op("MatMul", xs, w_s, step="static_proj"), step="with_static"
        )
    k = 2 + int(static)
    w_h = ctx.weight(k, "w_h", np.asarray(ctx.blobs[k], np.float32).reshape(gates, h).T)
    if not lstm:
        w_o = ctx.weight(k + 1, "w_o", np.asarray(ctx.blobs[k + 1], np.float32).reshape(h, h).T)
        b_o = ctx.weight(k + 2, "b_o")
    cont = ctx.op("Unsqueeze", ctx.x[1], ctx.const("cont_axes", [2]), step="cont")  # (T, N, 1)
    first_state = 2 + int(static)
    zeros = ctx.const("zeros", np.zeros((n, h), np.float32), np.float32)
    if p.expose_hidden:
        h_prev = ctx.op("Reshape", ctx.x[first_state], ctx.const("state_shape", [n, h]), step="h0")
        c_prev = (
            ctx.op("Reshape", ctx.x[first_state + 1], ctx.const("state_shape", [n, h]), step="c0")
            if lstm
            else zeros
        )
    else:
        h_prev, c_prev = zeros, zeros
    step_axis = ctx.const("step_axis", [0])
    outs = []
    for i in range(t):
        index = ctx.const(f"t{i}", i)
        c_t = ctx.op("Gather", cont, index, step=f"t{i}/cont", axis=0)  # (N, 1)
        x_t = ctx.op("Gather", projected, index, step=f"t{i}/x", axis=0)  # (N, G)
        h_in = ctx.op("Mul", h_prev, c_t, step=f"t{i}/h_cont")
        pre = ctx.op("Add", x_t, ctx.op("MatMul", h_in, w_h, step=f"t{i}/h_proj"), step=f"t{i}/pre")
        if lstm:
            i_g, f_g, o_g, g_g = ctx.node(
                "Split", [pre, ctx.const("split_gates", [h] * 4)], 4, step=f"t{i}/gates", axis=1
            )
            i_g = ctx.op("Sigmoid", i_g, step=f"t{i}/input_gate")
            f_g = ctx.op("Sigmoid", f_g, step=f"t{i}/forget_gate")
            o_g = ctx.op("Sigmoid", o_g, step=f"t{i}/output_gate")
            g_g = ctx.op("Tanh", g_g, step=f"t{i}/candidate")
            kept = ctx.op("Mul", ctx.op("Mul", f_g, c_t, step=f"t{i}/forget_cont"), c_prev, step=f"t{i}/kept")
            c_prev = ctx.op("Add", kept, ctx.op("Mul", i_g, g_g, step=f"t{i}/new"), step=f"t{i}/c")
            h_prev = ctx.op("Mul", o_g, ctx.op("Tanh", c_prev, step=f"t{i}/tanh_c"), step=f"t{i}/h")
            out = h_prev
        else:
            h_prev = ctx.op("Tanh", pre, step=f"t{i}/h")
            o_lin = ctx.op("Add", ctx.op("MatMul", h_prev, w_o, step=f"t{i}/o_proj"), b_o, step=f"t{i}/o_b")
            out = ctx.op("Tanh", o_lin, step=f"t{i}/o")
        outs.append(ctx.op("Unsqueeze", out, step_axis, step=f"t{i}/out"))
    if t == 1:
        ctx.node("Identity", outs, [ctx.y[0]])
    else:
        ctx.node("Concat", outs, [ctx.y[0]], axis=0)
    if len(ctx.y) > 1:
        ctx.node("Unsqueeze", [h_prev, step_axis], [ctx.y[1]])
    if len(ctx.y) > 2:
        ctx.node("Unsqueeze", [c_prev, step_axis], [ctx.y[2]])
