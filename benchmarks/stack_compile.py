"""Compile time of stack(chain(lu_linear(), affine()), n): flat in n because the body is scanned.

Run: python benchmarks/stack_compile.py   (CPU, GPU or TPU; prints the device)
"""

import jax

import flowjax_lab as fl
from _common import compile_seconds, device_info, print_table, time_call, write_results


def main(dim: int = 16, batch: int = 4096) -> None:
    print("device:", device_info())
    rows = []
    x = jax.random.normal(jax.random.key(0), (batch, dim))
    for n in (2, 8, 32):
        flow = fl.make_flow(
            fl.stack(fl.chain(fl.transforms.lu_linear(), fl.transforms.affine()), n),
            event_shape=(dim,),
        )
        params = flow.init(jax.random.key(1))
        loss = fl.forward_kl(flow)
        grad = jax.grad(loss)
        rows.append(
            {
                "layers": n,
                "dim": dim,
                "compile_log_prob_s": compile_seconds(flow.log_prob, params, x),
                "compile_grad_s": compile_seconds(grad, params, x),
                "log_prob_ms": 1e3 * time_call(jax.jit(flow.log_prob), params, x),
                "jaxpr_eqns": len(jax.make_jaxpr(flow.log_prob)(params, x).jaxpr.eqns),
            }
        )
    cols = ["layers", "dim", "compile_log_prob_s", "compile_grad_s", "log_prob_ms", "jaxpr_eqns"]
    print_table(rows, cols)
    print("wrote", write_results("stack_compile", rows, {"batch": batch}))


if __name__ == "__main__":
    main()
