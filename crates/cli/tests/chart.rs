//! The Helm chart under deploy/helm/osprey: linted and rendered by the real Helm engine, and the
//! rendered manifests checked (scripts/check-chart.py).

#[test]
fn the_helm_chart_lints_renders_and_holds_together() {
    let Some(python) = osprey_testkit::helm_python() else { return };
    let root = osprey_testkit::repo_root();
    let out = std::process::Command::new(python).arg(root.join("scripts/check-chart.py")).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("chart ok"), "{text}");
}

/// The GPU pack's own steps that need no GPU: pieces cut, checked, joined and unpacked, and a
/// damaged or missing piece refused (scripts/gpu-pack selftest).
#[test]
fn gpu_pack_pieces_join_and_a_damaged_one_is_refused() {
    let root = osprey_testkit::repo_root();
    let out = std::process::Command::new(root.join("scripts/gpu-pack")).arg("selftest").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("a damaged and a missing piece refused"), "{text}");
}
