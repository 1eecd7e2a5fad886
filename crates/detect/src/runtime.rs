//! Finding and loading ONNX Runtime and the model file.

use crate::config::{Config, Device};
use ort::session::builder::SessionBuilder;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// SHA-256 of `models/nanodet-416.onnx` as converted by `scripts/convert-nanodet` (see
/// `models/README.md` for its provenance).
pub const SHIPPED_MODEL_SHA256: &str = "fe4ea6f8afdc4b324b514b79574d6c44940fc319e30757189b2f2a0a7de8e75f";
const ORT_LIBRARY: &str = "third_party/onnxruntime/libonnxruntime.so";

pub fn onnxruntime_library(config: &Config) -> Result<PathBuf> {
    if let Some(path) = &config.onnxruntime {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(path));
    }
    osprey_core::find_bundled(ORT_LIBRARY).ok_or_else(|| {
        Error::unavailable(format!(
            "ONNX Runtime not found: run scripts/fetch-onnxruntime (puts it in {ORT_LIBRARY}), \
             set ORT_DYLIB_PATH, or set detect.onnxruntime"
        ))
    })
}

/// The model's bytes, read once and checked against the shipped hash when it is the shipped model.
pub fn load_model(config: &Config) -> Result<Vec<u8>> {
    let path = find_model(config)?;
    let bytes = std::fs::read(&path).kind_ctx(ErrorKind::Unavailable, || format!("cannot read {}", path.display()))?;
    if config.model_path.is_none() && config.model == "nanodet-416" {
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != SHIPPED_MODEL_SHA256 {
            return Err(Error::invalid(format!(
                "{} has sha256 {sha}, not the shipped {SHIPPED_MODEL_SHA256}: re-fetch the repository's model",
                path.display()
            )));
        }
    }
    Ok(bytes)
}

/// Where the model file is: `detect.model_path`, or the shipped `models/<model>.onnx`.
pub fn find_model(config: &Config) -> Result<PathBuf> {
    if let Some(path) = &config.model_path {
        if !path.is_file() {
            return Err(Error::invalid(format!("detect.model_path {} does not exist", path.display())));
        }
        return Ok(path.clone());
    }
    let relative = format!("models/{}.onnx", config.model);
    osprey_core::find_bundled(&relative).ok_or_else(|| {
        Error::invalid(format!("model {:?} not found as {relative}; set detect.model_path", config.model))
    })
}

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, loaded from `library` on first use.
pub fn environment(library: &Path) -> Result<&'static ort::environment::Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        if !library.is_file() {
            return Err(format!("ONNX Runtime library {} does not exist", library.display()));
        }
        ort::init_from(library)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
            .with_name("osprey")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    env.as_ref().map_err(|e| Error::unavailable(e.clone()))
}

/// Puts a session on `device`, and says whether that is a GPU. `cuda` fails with a message that
/// says what is missing; `auto` takes the GPU when this ONNX Runtime library has CUDA and one
/// answers, else stays on the CPU and says so once.
pub fn on_device(builder: SessionBuilder, device: Device) -> Result<(SessionBuilder, bool)> {
    use ort::ep::{ExecutionProvider, CUDA};
    let cuda_built = CUDA::is_available().unwrap_or(false);
    let id = match device {
        Device::Cpu => return Ok((builder, false)),
        Device::Cuda(id) => id,
        Device::Auto if cuda_built => 0,
        Device::Auto => {
            FALLBACK.call_once(|| {
                tracing::info!("detector: this ONNX Runtime library has no CUDA execution provider; running on the CPU")
            });
            return Ok((builder, false));
        }
    };
    if !cuda_built {
        return Err(Error::unavailable(format!(
            "detect.device asks for CUDA GPU {id}, but this ONNX Runtime library has no CUDA execution provider: \
             point detect.onnxruntime (or ORT_DYLIB_PATH) at the onnxruntime-gpu library, on a node with an NVIDIA GPU"
        )));
    }
    let ep = CUDA::default().with_device_id(id).build().error_on_failure();
    match builder.with_execution_providers([ep]) {
        Ok(b) => {
            tracing::info!(gpu = id, "detector on CUDA");
            Ok((b, true))
        }
        Err(e) if device == Device::Auto => {
            FALLBACK.call_once(|| tracing::warn!(error = %e, "detector: CUDA did not start; running on the CPU"));
            // The failed builder is spent; the caller's fallback builds a fresh one.
            Err(Error::unavailable(format!("CUDA did not start: {e}")))
        }
        Err(e) => Err(Error::unavailable(format!("cannot start CUDA on GPU {id}: {e}"))),
    }
}

static FALLBACK: std::sync::Once = std::sync::Once::new();
