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

# GPU workers: ONNX Runtime's CUDA build and the CUDA 12 / cuDNN 9 user-space libraries, all from
# PyPI wheels. The driver comes from the node (runtimeClassName: nvidia). Select it with
# detect.device = "cuda" (the chart does) or "auto".
FROM python:3.11-slim-bookworm AS cuda-libs
RUN pip install --no-cache-dir --target /wheels \
        onnxruntime-gpu==1.31.1 nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 nvidia-cudnn-cu12 \
        nvidia-cufft-cu12 nvidia-curand-cu12 nvidia-cuda-nvrtc-cu12 \
    && mkdir -p /cuda \
    && find /wheels -name '*.so*' -exec cp -a {} /cuda/ \;

FROM runtime AS cuda
COPY --from=cuda-libs /cuda /opt/osprey/cuda
ENV LD_LIBRARY_PATH=/opt/osprey/cuda ORT_DYLIB_PATH=/opt/osprey/cuda/libonnxruntime.so OSPREY_DETECT__DEVICE=auto
