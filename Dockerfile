# Osprey: one image, every role (`osprey vault|worker|agent|notify|up`).
#   docker build -t osprey .                 # CPU image
#   docker build --target cuda -t osprey:cuda .   # GPU workers (NVIDIA container runtime)
# The build needs crates.io, Debian and PyPI; nothing is fetched when the image runs.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        clang libclang-dev pkg-config python3 python3-pip \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p osprey-cli \
    && strip target/release/osprey \
    && scripts/fetch-onnxruntime

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends \
        ca-certificates libavcodec59 libavformat59 libavutil57 libswscale6 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/osprey --create-home osprey
# The binary finds models/, samples/ and third_party/ beside its parent directory.
COPY --from=build /src/target/release/osprey /opt/osprey/bin/osprey
COPY --from=build /src/third_party/onnxruntime /opt/osprey/third_party/onnxruntime
COPY models /opt/osprey/models
COPY samples /opt/osprey/samples
ENV PATH=/opt/osprey/bin:$PATH OSPREY_DATA_DIR=/var/lib/osprey
USER osprey
WORKDIR /var/lib/osprey
EXPOSE 8080 9464
ENTRYPOINT ["osprey"]
CMD ["up"]

# GPU workers: ONNX Runtime's CUDA build and the CUDA 13 / cuDNN 9 user-space libraries, all from
# PyPI wheels. onnxruntime-gpu 1.31.1 is a CUDA 13 build (its CUDA provider needs libcudart.so.13,
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10); the wheels below are its `cuda` and
# `cudnn` extras plus cuBLAS, without its Python dependencies. The driver comes from the node (runtimeClassName: nvidia). Select it
# with detect.device = "cuda" (the chart does) or "auto".
FROM python:3.11-slim-bookworm AS cuda-libs
RUN pip install --no-cache-dir --no-deps --target /wheels onnxruntime-gpu==1.31.1 \
    && pip install --no-cache-dir --target /wheels "nvidia-cuda-runtime~=13.0" "nvidia-cublas~=13.0" \
        "nvidia-curand~=10.0" "nvidia-cufft~=12.0" "nvidia-cuda-nvrtc~=13.0" "nvidia-cudnn-cu13~=9.0" \
    && mkdir -p /cuda \
    && find /wheels -name '*.so*' -exec cp -a {} /cuda/ \; \
    && ln -s libonnxruntime.so.1.31.1 /cuda/libonnxruntime.so

FROM runtime AS cuda
COPY --from=cuda-libs /cuda /opt/osprey/cuda
ENV LD_LIBRARY_PATH=/opt/osprey/cuda ORT_DYLIB_PATH=/opt/osprey/cuda/libonnxruntime.so OSPREY_DETECT__DEVICE=auto
