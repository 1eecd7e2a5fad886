//! The fuzz targets' bodies (`fuzz/src/lib.rs`, the same code libFuzzer runs) over their corpus on
//! stable: the committed seeds (`fuzz/corpus/<target>/`) and the hostile MP4s
//! (`samples/hostile/`), each with a deadline and under an allocation cap, so a reproducer found
//! by fuzzing and committed there is a regression test from then on.

#[allow(dead_code)]
#[path = "../../../fuzz/src/lib.rs"]
mod bodies;

use osprey_testkit::{repo_root, within, CappedAlloc};
use std::path::PathBuf;
use std::time::Duration;

/// No input of a few kilobytes needs more than this in one allocation.
#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc::new(256 << 20);

fn inputs(target: &str, with_hostile: bool) -> Vec<(PathBuf, Vec<u8>)> {
    let mut dirs = vec![repo_root().join("fuzz/corpus").join(target)];
    if with_hostile {
        dirs.push(repo_root().join("samples/hostile"));
    }
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap_or_else(|e| panic!("{}: {e}", d.display())))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{target} has a corpus");
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn run(target: &str, with_hostile: bool, body: fn(&[u8])) {
    for (path, bytes) in inputs(target, with_hostile) {
        let what = format!("{target} on {}", path.display());
        within(&what, Duration::from_secs(30), move || body(&bytes));
    }
}

#[test]
fn upload_check_corpus() {
    run("upload_check", true, bodies::upload_check);
}

#[test]
fn demux_corpus() {
    run("demux", true, bodies::demux);
}

#[test]
fn decode_corpus() {
    run("decode", true, bodies::decode);
}

#[test]
fn kerberos_wire_corpus() {
    run("kerberos_wire", false, bodies::kerberos_wire);
}
