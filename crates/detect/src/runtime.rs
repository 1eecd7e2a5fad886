//! Finding and loading ONNX Runtime and the model file.

use crate::config::{Config, Device};
use crate::manifest::{Model, MANIFEST};
use ort::session::builder::SessionBuilder;
use osprey_core::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

/// The model a config names, read and checked once: `detect.model_dir`, or the shipped
/// `models/<detect.model>/`.
pub fn open_model(config: &Config) -> Result<Model> {
    Model::open(&model_dir(config)?)
}

/// Where the model's directory is.
pub fn model_dir(config: &Config) -> Result<PathBuf> {
    if let Some(dir) = &config.model_dir {
        if !dir.join(MANIFEST).is_file() {
            return Err(Error::invalid(format!(
                "detect.model_dir {} holds no {MANIFEST}: a model directory holds its ONNX file and its manifest",
                dir.display()
            )));
        }
        return Ok(dir.clone());
    }
    let name = match config.model.as_str() {
        AUTO => shipped_for(config),
        name => name,
    };
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !plain || name.starts_with('.') {
        return Err(Error::invalid(format!(
            "detect.model {name:?} is not a model name: use letters, digits, '.', '_' and '-', or set detect.model_dir"
        )));
    }
    let relative = format!("models/{name}/{MANIFEST}");
    let manifest = osprey_core::find_bundled(&relative)
        .ok_or_else(|| Error::invalid(format!("model {name:?} not found as {relative}; set detect.model_dir")))?;
    Ok(manifest.parent().expect("a file in a directory").to_path_buf())
}

/// `detect.model`'s default: the shipped model that runs fastest where this worker runs.
pub const AUTO: &str = "auto";

/// int8 NanoDet on the CPU (2.4x fp32 on an AVX-512-VNNI Xeon, 1.05-1.1x on an AVX2-only AMD
/// EPYC: see models/README.md), fp32 on a GPU.
fn shipped_for(config: &Config) -> &'static str {
    let gpu = match config.device {
        Device::Cuda(_) => true,
        Device::Cpu => false,
        Device::Auto => cuda_available(config),
    };
    let name = if gpu { "nanodet-416" } else { "nanodet-416-int8" };
    AUTO_CHOICE.call_once(|| tracing::info!(model = name, "detect.model auto"));
    name
}

static AUTO_CHOICE: std::sync::Once = std::sync::Once::new();

/// Whether this ONNX Runtime library has CUDA (a GPU may still refuse at session start).
fn cuda_available(config: &Config) -> bool {
    use ort::ep::ExecutionProvider;
    let loaded = onnxruntime_library(config).and_then(|lib| environment(&lib).map(|_| ()));
    loaded.is_ok() && ort::ep::CUDA::is_available().unwrap_or(false)
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
