#!/usr/bin/env python3
"""Compute floor for a model on this CPU: multiply-adds per inference counted from the ONNX graph
(Conv, ConvTranspose, MatMul, Gemm; 2 FLOPs per multiply-add), and the best measured float32
matrix-multiply rate with 1 and 2 threads: numpy (OpenBLAS) and onnxruntime's own GEMM (MLAS),
whichever is faster.

    flops.py MODEL      -> JSON {"flops_per_frame", "matmul_gflops": {"1": ..., "2": ...}}
"""
import json, os, subprocess, sys, time


def model_flops(path):
    import onnx
    from onnx import shape_inference, numpy_helper
    model = shape_inference.infer_shapes(onnx.load(path))
    g = model.graph
    shapes = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        # A named dimension (the dynamic batch) counts as 1: FLOPs are per frame.
        dims = [1 if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        shapes[v.name] = dims
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in g.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if not w or not out or 0 in out:
                continue
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            out_elems = 1
            for d in out:
                out_elems *= d
            # weight [Cout, Cin/groups, kh, kw]: each output element needs Cin/groups*kh*kw MACs
            macs_per = w[1] * w[2] * w[3] if len(w) == 4 else w[1]
            total += out_elems * macs_per
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a and b and 0 not in a and 0 not in b:
                m = 1
                for d in a[:-1]:
                    m *= d
                total += m * a[-1] * b[-1]
    return 2 * total


def ort_matmul_gflops(threads, n=1024):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper, TensorProto
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    s.run(None, {"a": a, "b": b})
    best = 0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            s.run(None, {"a": a, "b": b})
        best = max(best, 10 * 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def numpy_matmul_gflops(threads):
    code = (
        "import numpy as np, time\n"
        "n=1024; a=np.random.rand(n,n).astype(np.float32); b=np.random.rand(n,n).astype(np.float32)\n"
        "a@b\n"
        "best=0\n"
        "for _ in range(5):\n"
        "    t=time.perf_counter(); [a@b for _ in range(10)]; dt=time.perf_counter()-t\n"
        "    best=max(best, 10*2*n**3/dt/1e9)\n"
        "print(best)\n"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return float(subprocess.check_output([sys.executable, "-c", code], env=env))


if __name__ == "__main__":
    rates = {str(t): max(numpy_matmul_gflops(t), ort_matmul_gflops(t)) for t in (1, 2)}
    json.dump({"flops_per_frame": model_flops(sys.argv[1]), "matmul_gflops": rates}, sys.stdout)
    print()
