//! The `osprey` binary as a user runs it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn osprey() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osprey"));
    // Tests must not pick up a developer's settings.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OSPREY_")) {
        c.env_remove(k);
    }
    c
}

#[test]
fn bad_config_names_the_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osprey.toml");
    std::fs::write(&file, "[vault]\nmax_upload_bytez = 5\n").unwrap();
    let out = osprey().args(["config", "check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vault.max_upload_bytez"), "{err}");

    let out = osprey().args(["config", "check"]).env("OSPREY_BUS__KIND", "carrier-pigeon").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bus.kind"));

    let out = osprey().args(["config", "check", "--config", "/nonexistent/osprey.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

/// What a role would refuse at start, `config check` refuses first, naming the key.
#[test]
fn config_check_refuses_what_the_roles_would() {
    for (env, value, key) in [
        ("OSPREY_DETECT__SAMPLING", "fast", "detect.sampling"),
        ("OSPREY_DETECT__DECODER", "yolo9000", "detect.decoder"),
        ("OSPREY_DETECT__MODEL", "../../etc", "detect.model"),
        ("OSPREY_DETECT__MODEL", "yolo9000", "models/yolo9000/model.toml"),
        ("OSPREY_DETECT__MODEL_DIR", "/tmp", "detect.model_dir"),
        ("OSPREY_MODELS", "[{name=\"../x\"}]", "models.name"),
        ("OSPREY_DETECT__CLASSES", "[\"person\", \"unicorn\"]", "detect.classes"),
        ("OSPREY_DETECT__DEVICE", "tpu", "detect.device"),
    ] {
        let out = osprey().args(["config", "check"]).env(env, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env}={value} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{env}={value}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osprey.toml");
    let rule = "[[notify.rules]]\nname = 'r'\nlabel = 'person'\nwebhook = 'http://127.0.0.1:9/x'\n";
    std::fs::write(&file, format!("{rule}active_from = '25:00'\nactive_to = '06:00'\n")).unwrap();
    let out = osprey().args(["config", "check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("active_from"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn config_show_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osprey.toml");
    std::fs::write(&file, "[[vault.accounts]]\nname = 'a'\naccess_key = 'AK'\nsecret_key = 'very-secret-value'\n")
        .unwrap();
    let out = osprey().args(["config", "show", "--config"]).arg(&file).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("<hidden>") && !text.contains("very-secret-value"), "{text}");
}

/// Every kind of secret the config can hold: none of them is printed, and the config is valid
/// (so each was really read).
#[test]
fn config_show_prints_no_secret_of_any_kind() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("osprey.toml");
    let secrets = [
        "account-secret-1",
        "signing-key-0123456789abcdef0123456789",
        "s3-secret-2",
        "forward-secret-3",
        "agent-secret-4",
        "webhook-secret-5",
        "db-password-6",
    ];
    std::fs::write(
        &file,
        format!(
            r#"
[vault]
signing_key = "{}"
database_url = "postgres://osprey:{}@127.0.0.1:5432/osprey"

[[vault.accounts]]
name = "a"
access_key = "AK"
secret_key = "{}"

[vault.forward]
url = "https://central.example.com"
access_key = "edge"
secret_key = "{}"
provider = "local"

[providers.s3]
kind = "s3"
bucket = "b"
access_key_id = "AKID"
secret_access_key = "{}"

[[agent.vaults]]
url = "http://127.0.0.1:8080"
access_key = "AK"
secret_key = "{}"

[[notify.rules]]
name = "people"
label = "person"
webhook = "https://hooks.example.com/x"
secret = "{}"
"#,
            secrets[1], secrets[6], secrets[0], secrets[3], secrets[2], secrets[4], secrets[5]
        ),
    )
    .unwrap();
    let check = osprey().args(["config", "check", "--config"]).arg(&file).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let out = osprey().args(["config", "show", "--config"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert_eq!(text.matches("<hidden>").count(), 6, "{text}");
    assert!(text.contains("postgres://osprey:***@127.0.0.1"), "{text}");
}

#[tokio::test]
async fn vault_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = osprey_testkit::free_port();
    let child = vault(&["vault"], &[("OSPREY_DATA_DIR", dir.path().to_str().unwrap())], port);
    let health = healthy(port).await;
    assert_eq!(health["status"], "ok");
    assert!(dir.path().join("osprey.db").exists());
    assert!(dir.path().join("bus.db").exists());
    assert!(dir.path().join("signing.key").exists());

    terminate(child, "vault");
}

/// `osprey ARGS` (a vault) on 127.0.0.1:`port`, quiet.
fn vault(args: &[&str], env: &[(&str, &str)], port: u16) -> std::process::Child {
    let mut command = osprey();
    command.args(args).envs(env.iter().copied()).env("OSPREY_VAULT__LISTEN", format!("127.0.0.1:{port}"));
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// Waits for the vault on `port` to answer `/healthz`; its answer.
async fn healthy(port: u16) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = reqwest::get(&url).await {
            return resp.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "vault did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM and expects a clean exit.
fn terminate(mut child: std::process::Child, role: &str) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{role} did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{role}: {status:?}");
}

#[tokio::test]
async fn worker_serves_metrics_with_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    let port = osprey_testkit::free_port();
    let child = osprey()
        .arg("worker")
        .env("OSPREY_DATA_DIR", dir.path())
        .env("OSPREY_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = reqwest::get(&url).await {
            let text = resp.text().await.unwrap();
            if text.contains("osprey_worker_lag_messages 0") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "worker metrics did not show its lag");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    terminate(child, "worker");
}

#[test]
fn detect_prints_people_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    osprey_testkit::ffmpeg(&["-ss", "20", "-t", "3", "-i", sample.to_str().unwrap(), "-c", "copy"], &clip);

    let out = osprey().args(["detect", "--fps", "1"]).arg(&clip).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    // detect.model auto: the int8 model on a CPU with VNNI, else fp32.
    assert!(table.contains("model nanodet-416") && table.contains(" 1 (sha256 "), "{table}");
    assert!(table.contains("on 768x576"), "{table}");
    assert!(table.lines().filter(|l| l.contains(" person ")).count() >= 5, "{table}");

    let out = osprey().args(["detect", "--json", "--sampling", "every:10"]).arg(&clip).output().unwrap();
    assert!(out.status.success());
    let data: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(data["model"].as_str().unwrap().starts_with("nanodet-416"), "{data}");
    assert_eq!(data["model_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(data["width"], 768);
    assert!(data["objectCount"]["person"].as_u64().unwrap() >= 3);
    assert_eq!(data["frames"].as_array().unwrap().len(), data["frames_analyzed"].as_u64().unwrap() as usize);
    let first = &data["frames"][0]["detections"][0];
    assert!(first["label"].is_string() && first["box"].as_array().unwrap().len() == 4, "{first}");
}

#[test]
fn detect_on_a_broken_file_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.mp4");
    let sample = std::fs::read(osprey_testkit::repo_root().join("samples/vtest.mp4")).unwrap();
    std::fs::write(&broken, &sample[..sample.len() / 3]).unwrap();
    let out = osprey().arg("detect").arg(&broken).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot analyse") && err.contains("mp4: box 'mdat'") && err.contains("truncated"), "{err}");

    let out = osprey().args(["detect", "--sampling", "sometimes"]).arg(&broken).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid sampling"));
}

/// `osprey up --once [extra] --file CLIP --config CONFIG` on a free port: what it printed, once
/// it has succeeded.
fn up_once(extra: &[&str], clip: &std::path::Path, config: &std::path::Path) -> String {
    let out = osprey()
        .args(["up", "--once"])
        .args(extra)
        .arg("--file")
        .arg(clip)
        .arg("--config")
        .arg(config)
        .env("OSPREY_VAULT__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn up_once_records_uploads_detects_and_prints_every_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    osprey_testkit::ffmpeg(&["-t", "25", "-i", sample.to_str().unwrap(), "-c", "copy"], &clip);
    let run = || {
        osprey()
            .args(["up", "--once", "--chunk-secs", "10", "--file"])
            .arg(&clip)
            .env("OSPREY_DATA_DIR", dir.path().join("data"))
            .env("OSPREY_VAULT__LISTEN", "127.0.0.1:0")
            .env("OSPREY_DETECT__SAMPLING", "1")
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let chunks: Vec<&str> = stdout.lines().filter(|l| l.starts_with("chunk")).collect();
    assert_eq!(chunks.len(), 3, "25 s in 10 s chunks: {stdout}");
    assert!(chunks.iter().all(|l| l.contains("person x")), "people walk in every chunk: {stdout}");
    assert!(stdout.contains("3 chunks analysed"), "{stdout}");
    // A second run on the same data directory works too (state persists, nothing stale printed).
    let again = run();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("3 chunks analysed"));
}

/// `osprey up` indexes what its worker found; a vault on the same data then answers
/// `osprey search` with events that have thumbnails.
#[tokio::test(flavor = "multi_thread")]
async fn up_indexes_and_search_finds_people_with_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    osprey_testkit::ffmpeg(&["-t", "20", "-i", sample.to_str().unwrap(), "-c", "copy"], &clip);
    let config = dir.path().join("osprey.toml");
    let data = dir.path().join("data").display().to_string();
    let toml = format!(
        "data_dir = {data:?}\n[[vault.accounts]]\nname = \"home\"\naccess_key = \"home-key\"\nsecret_key = \"home-secret-1\"\n"
    );
    std::fs::write(&config, toml).unwrap();
    let stdout = up_once(&[], &clip, &config);
    let summary = stdout.lines().find(|l| l.contains("distinct objects tracked")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(summary.contains("person x"), "{summary}");

    let port = osprey_testkit::free_port();
    let server = vault(&["vault", "--config", config.to_str().unwrap()], &[], port);
    healthy(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let search = osprey()
        .args(["search", "person", "--since", "2h", "--until", "0s", "--json", "--vault", &base, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&search.stdout).to_string();
    assert!(search.status.success(), "{lines}\n{}", String::from_utf8_lossy(&search.stderr));
    let events: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.len() >= 3, "{lines}");
    assert!(events.iter().all(|e| e["label"] == "person"));
    let starts: Vec<i64> = events.iter().map(|e| e["start_ms"].as_i64().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first: {starts:?}");
    let thumbnail = reqwest::Client::new()
        .get(format!("{base}{}", events[0]["thumbnail_url"].as_str().unwrap()))
        .basic_auth("home-key", Some("home-secret-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(thumbnail.status(), 200);
    assert!(thumbnail.bytes().await.unwrap().starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
    let table = osprey().args(["search", "--vault", &base, "--config"]).arg(&config).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.starts_with("time (UTC)") && table.contains("/api/v1/events/"), "{table}");
    terminate(server, "vault");
}

/// A model shipped as a directory: `osprey model check` runs a good one on video and refuses,
/// with exit 2 and the reason, a manifest that does not match its model.
#[test]
fn model_check_runs_a_model_directory_and_refuses_a_manifest_that_does_not_match() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    osprey_testkit::ffmpeg(&["-ss", "20", "-t", "4", "-i", sample.to_str().unwrap(), "-c", "copy"], &clip);
    let model = std::fs::read(osprey_testkit::repo_root().join("models/nanodet-416/model.onnx")).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&model));
    let model_dir = dir.path().join("people");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::write(model_dir.join("model.onnx"), &model).unwrap();
    let manifest = |extra: &str, mean: &str| {
        format!(
            "name = \"people\"\nversion = \"2\"\nfamily = \"nanodet\"\nsha256 = \"{sha}\"\nlicence = \"Apache-2.0\"\n\
             provenance = \"the shipped NanoDet\"\n{extra}\n[input]\nsize = 416\nlayout = \"nchw\"\ncolour = \"bgr\"\n\
             mean = {mean}\nstd = [57.375, 57.12, 58.395]\n"
        )
    };
    let check = |text: String| {
        std::fs::write(model_dir.join("model.toml"), text).unwrap();
        osprey().args(["model", "check", "--fps", "1", "--source"]).arg(&clip).arg(&model_dir).output().unwrap()
    };
    let good = "[103.53, 116.28, 123.675]";
    let out = check(manifest("", good));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("model people 2 (nanodet, 80 labels") && stdout.contains("matches its manifest"),
        "{stdout}"
    );
    assert!(stdout.contains("person x") && stdout.contains("ms a frame"), "{stdout}");

    std::fs::write(model_dir.join("labels.txt"), "person\ncar\nbus\n").unwrap();
    for (text, says) in [
        (manifest("labels = \"labels.txt\"", good), "expected [1, N, 3] or [1, N, 44]"),
        (manifest("", good).replace("size = 416", "size = 320"), "input.size 320"),
        (manifest("", "[0, 0, 0]").replace("nchw", "nhwc"), "input.layout nhwc"),
        (manifest("", good).replace(&sha, &"0".repeat(64)), "the manifest says"),
        (manifest("", good).replace("nanodet", "yolov99"), "yolov99"),
    ] {
        let out = check(text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{says}: {err}");
        assert!(err.contains(says), "{says}: {err}");
    }
}

/// Three model groups on one `osprey up`: fp32 people on every camera, int8 cars on this camera,
/// and a model for a camera that is not recording. Each chunk gets one result per group that
/// analyses its camera, the index keeps each model's events apart, and search filters by model.
#[tokio::test(flavor = "multi_thread")]
async fn model_groups_run_side_by_side_on_one_up() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let sample = osprey_testkit::repo_root().join("samples/vtest.mp4");
    osprey_testkit::ffmpeg(&["-t", "12", "-i", sample.to_str().unwrap(), "-c", "copy"], &clip);
    let tiny = osprey_testkit::repo_root().join("crates/detect/tests/models/yolov8");
    let config = dir.path().join("osprey.toml");
    let data = dir.path().join("data").display().to_string();
    let toml = format!(
        "data_dir = {data:?}\n[detect]\nsampling = \"1\"\n\
         [[vault.accounts]]\nname = \"home\"\naccess_key = \"home-key\"\nsecret_key = \"home-secret-1\"\n\
         [[models]]\nname = \"people\"\nmodel = \"nanodet-416\"\nclasses = [\"person\"]\n\
         [[models]]\nname = \"cars\"\nmodel = \"nanodet-416-int8\"\nclasses = [\"car\", \"person\"]\ndevices = [\"sample\"]\n\
         [[models]]\nname = \"gate\"\nmodel_dir = {tiny:?}\ndevices = [\"gate-9\"]\n"
    );
    std::fs::write(&config, toml).unwrap();
    let out = osprey().args(["config", "check", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = up_once(&["--chunk-secs", "6"], &clip, &config);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("chunk")).collect();
    let of = |model: &str| lines.iter().filter(|l| l.ends_with(&format!("[{model}]"))).count();
    let chunks: std::collections::BTreeSet<&str> = lines.iter().map(|l| &l[..9]).collect();
    let n = chunks.len();
    assert!(n >= 2, "{stdout}");
    assert_eq!((of("nanodet-416"), of("nanodet-416-int8"), of("tiny-yolov8")), (n, n, 0), "{stdout}");
    assert!(stdout.contains(&format!("{n} chunks analysed")), "{stdout}");

    let port = osprey_testkit::free_port();
    let server = vault(&["vault", "--config", config.to_str().unwrap()], &[], port);
    healthy(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let search = |model: &str| {
        let out = osprey()
            .args([
                "search", "--since", "2h", "--until", "0s", "--json", "--model", model, "--vault", &base, "--config",
            ])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>()
    };
    let (fp32, int8, gate) = (search("nanodet-416"), search("nanodet-416-int8"), search("tiny-yolov8"));
    assert!(!fp32.is_empty() && fp32.iter().all(|e| e["model"] == "nanodet-416" && e["label"] == "person"));
    assert!(int8.iter().any(|e| e["label"] == "person"), "{int8:?}");
    assert!(int8.iter().all(|e| e["model"] == "nanodet-416-int8" && e["label"] != "bicycle"));
    assert!(gate.is_empty(), "the gate camera recorded nothing: {gate:?}");
    terminate(server, "vault");

    // A group of that name must exist for `worker --group`.
    let out = osprey().args(["worker", "--group", "plates", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no [[models]] group"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
