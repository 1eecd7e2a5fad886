//! Tracking measured against known truth: `scripts/tracking-clip.py` pastes real people cut from
//! the sample video onto its empty background along known paths (crossings, one in front of
//! another, entering and leaving, paths over the chunk boundary), in two 10 s chunks. The shipped
//! model and tracker run on each chunk; MOTA, IDF1 and ID switches are computed at the analysed
//! frames, at 2 and 5 frames per second, with and without joining tracks across the boundary
//! (the index's rule, `osprey_core::track::Ends`).

use osprey_core::track::Ends;
use osprey_core::Track;
use osprey_detect::{analyse, batcher_from_config, iou, Config, Options};
use osprey_media::Sampling;
use osprey_testkit::{reference_python, repo_root};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Deserialize)]
struct Truth {
    fps: i64,
    chunk_frames: i64,
    chunks: i64,
    objects: Vec<TruthBox>,
}

#[derive(Deserialize)]
struct TruthBox {
    id: u32,
    frame: i64,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    visibility: f32,
}

/// Truth boxes less visible than this are neither missed nor false when found.
const MIN_VISIBILITY: f32 = 0.25;
const MATCH_IOU: f32 = 0.5;
const JOIN_GAP_MS: i64 = 2000;

fn clip() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = reference_python()?;
        // Cached by the script's contents: a changed script makes a new clip.
        let script = std::fs::read(repo_root().join("scripts/tracking-clip.py")).unwrap();
        let digest =
            script.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        let dir = repo_root().join(format!("target/tracking-clip-{digest:016x}"));
        if !dir.join("truth.json").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            let status = std::process::Command::new(python)
                .arg(repo_root().join("scripts/tracking-clip.py"))
                .arg(repo_root().join("samples/vtest.mp4"))
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "scripts/tracking-clip.py failed");
        }
        Some(dir)
    })
    .as_ref()
}

/// Each chunk's person tracks at `fps` analysed frames per second, and the analysed frames' times.
fn track(dir: &std::path::Path, truth: &Truth, fps: f64) -> Vec<(Vec<i64>, Vec<Track>)> {
    let config = Config { model: "nanodet-416".into(), workers: 2, ..Config::default() };
    let batcher = batcher_from_config(&config).unwrap();
    let options = Options { sampling: Sampling::Fps(fps), ..Options::from_config(&config, "") };
    (0..truth.chunks)
        .map(|c| {
            let bytes = std::fs::read(dir.join(format!("chunk-{c}.mp4"))).unwrap();
            let data = analyse(&bytes, &options, &batcher, &|_, _| {}).unwrap();
            let frames = data.frames.iter().map(|f| f.pts_ms).collect();
            (frames, data.tracks.into_iter().filter(|t| t.label == "person").collect())
        })
        .collect()
}

/// Global ids for every chunk's tracks; with `join`, a track continuing one of the previous
/// chunk's keeps its id.
fn identities(chunks: &[(Vec<i64>, Vec<Track>)], chunk_ms: i64, join: bool) -> Vec<Vec<u32>> {
    let mut ids: Vec<Vec<u32>> = Vec::new();
    for (c, (_, tracks)) in chunks.iter().enumerate() {
        let mut these = Vec::new();
        for t in tracks {
            let fresh = (c as u32 + 1) * 1000 + t.id;
            let continued = (join && c > 0 && t.first_ms <= JOIN_GAP_MS)
                .then(|| continues(&chunks[c - 1].1, &ids[c - 1], t, chunk_ms))
                .flatten();
            these.push(continued.unwrap_or(fresh));
        }
        ids.push(these);
    }
    ids
}

/// The index's rule: the previous chunk's track of the same label alive at its end whose boxes,
/// moved on across the gap, overlap this one's best.
fn continues(previous: &[Track], previous_ids: &[u32], t: &Track, chunk_ms: i64) -> Option<u32> {
    let ends = Ends::of(t)?;
    previous
        .iter()
        .zip(previous_ids)
        .filter(|(p, _)| p.label == t.label && p.last_ms >= chunk_ms - JOIN_GAP_MS)
        .filter_map(|(p, id)| {
            let gap = chunk_ms + t.first_ms - p.last_ms;
            let quality = Ends::of(p)?.continues(&ends, gap);
            (gap > 0 && gap <= JOIN_GAP_MS && quality >= 0.1).then_some((*id, quality))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, _)| id)
}

#[derive(Debug, Default)]
struct Scores {
    truths: usize,
    misses: usize,
    false_positives: usize,
    switches: usize,
    boundary_switches: usize,
    idf1: f64,
}

impl Scores {
    fn mota(&self) -> f64 {
        1.0 - (self.misses + self.false_positives + self.switches) as f64 / self.truths as f64
    }
}

/// CLEAR MOT (a truth keeps its last match while IoU allows, the rest greedily by IoU) and IDF1
/// (the best one-to-one assignment of truth ids to track ids over the whole clip).
fn score(truth: &Truth, chunks: &[(Vec<i64>, Vec<Track>)], ids: &[Vec<u32>]) -> Scores {
    let frame_ms = 1000 / truth.fps;
    let by_frame: HashMap<i64, Vec<&TruthBox>> = truth.objects.iter().fold(HashMap::new(), |mut m, b| {
        m.entry(b.frame).or_default().push(b);
        m
    });
    let mut s = Scores::default();
    let mut last_match: HashMap<u32, u32> = HashMap::new();
    let mut together: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let (mut truth_boxes, mut track_boxes) = (0usize, 0usize);
    for (c, (frames, tracks)) in chunks.iter().enumerate() {
        for (i, &pts) in frames.iter().enumerate() {
            let frame = c as i64 * truth.chunk_frames + pts / frame_ms;
            let gts: Vec<&TruthBox> = by_frame.get(&frame).cloned().unwrap_or_default();
            let preds: Vec<(u32, [f32; 4])> = tracks
                .iter()
                .zip(&ids[c])
                .filter_map(|(t, id)| t.boxes.iter().find(|b| b.pts_ms == pts).map(|b| (*id, b.bbox)))
                .collect();
            let matches = match_frame(&gts, &preds, &last_match);
            let counted = |g: &TruthBox| g.visibility >= MIN_VISIBILITY;
            s.truths += gts.iter().filter(|g| counted(g)).count();
            truth_boxes += gts.iter().filter(|g| counted(g)).count();
            let matched_preds: Vec<usize> = matches.iter().map(|(_, p)| *p).collect();
            track_boxes += preds.len() - matches.iter().filter(|(g, _)| !counted(gts[*g])).count();
            s.false_positives += (0..preds.len()).filter(|p| !matched_preds.contains(p)).count();
            s.misses +=
                gts.iter().enumerate().filter(|(g, b)| counted(b) && !matches.iter().any(|m| m.0 == *g)).count();
            for &(g, p) in &matches {
                let (gid, pid) = (gts[g].id, preds[p].0);
                if !counted(gts[g]) {
                    continue;
                }
                *together.entry((gid, pid)).or_default() += 1;
                if last_match.insert(gid, pid).is_some_and(|before| before != pid) {
                    s.switches += 1;
                    s.boundary_switches += usize::from(c > 0 && i == 0);
                }
            }
        }
    }
    let idtp = best_assignment(&together) as f64;
    s.idf1 = 2.0 * idtp / (truth_boxes + track_boxes) as f64;
    s
}

/// Pairs (truth index, prediction index) with IoU of at least `MATCH_IOU`.
fn match_frame(gts: &[&TruthBox], preds: &[(u32, [f32; 4])], last: &HashMap<u32, u32>) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(bool, f32, usize, usize)> = Vec::new();
    for (g, gt) in gts.iter().enumerate() {
        for (p, (pid, b)) in preds.iter().enumerate() {
            let overlap = iou(&gt.bbox, b);
            if overlap >= MATCH_IOU {
                pairs.push((last.get(&gt.id) == Some(pid), overlap, g, p));
            }
        }
    }
    // Kept matches first, then by IoU.
    pairs.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let (mut used_g, mut used_p) = (vec![false; gts.len()], vec![false; preds.len()]);
    let mut out = Vec::new();
    for (_, _, g, p) in pairs {
        if !used_g[g] && !used_p[p] {
            (used_g[g], used_p[p]) = (true, true);
            out.push((g, p));
        }
    }
    out
}

/// The most frames matched by a one-to-one assignment of truth ids to track ids (exhaustive
/// over truth ids, which are few).
fn best_assignment(together: &BTreeMap<(u32, u32), usize>) -> usize {
    let truths: Vec<u32> =
        together.keys().map(|k| k.0).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    fn go(truths: &[u32], taken: &mut Vec<u32>, together: &BTreeMap<(u32, u32), usize>) -> usize {
        let Some((first, rest)) = truths.split_first() else { return 0 };
        let mut best = go(rest, taken, together);
        for (&(g, p), &n) in together.iter().filter(|((g, _), _)| g == first) {
            if g == *first && !taken.contains(&p) {
                taken.push(p);
                best = best.max(n + go(rest, taken, together));
                taken.pop();
            }
        }
        best
    }
    go(&truths, &mut Vec::new(), together)
}

#[test]
fn tracking_on_a_clip_with_known_paths() {
    let Some(dir) = clip() else { return };
    let truth: Truth = serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap();
    let chunk_ms = truth.chunk_frames * 1000 / truth.fps;
    println!(
        "\ntracking on the synthetic clip ({} truth boxes, 6 people, 2 chunks of {chunk_ms} ms)",
        truth.objects.len()
    );
    println!(
        "{:>4}  {:<8}  {:>6}  {:>6}  {:>5}  {:>13}  {:>4}  {:>4}  {:>5}",
        "fps", "joined", "MOTA", "IDF1", "IDSW", "boundary IDSW", "FP", "FN", "truth"
    );
    let mut at = BTreeMap::new();
    for fps in [2.0, 5.0] {
        let chunks = track(dir, &truth, fps);
        for join in [false, true] {
            let s = score(&truth, &chunks, &identities(&chunks, chunk_ms, join));
            println!(
                "{fps:>4}  {:<8}  {:>6.3}  {:>6.3}  {:>5}  {:>13}  {:>4}  {:>4}  {:>5}",
                if join { "yes" } else { "no" },
                s.mota(),
                s.idf1,
                s.switches,
                s.boundary_switches,
                s.false_positives,
                s.misses,
                s.truths
            );
            at.insert((fps as u32, join), s);
        }
    }
    let (apart, joined) = (&at[&(5, false)], &at[&(5, true)]);
    assert!(apart.boundary_switches > 0, "without joining, the boundary must switch ids: {apart:?}");
    assert_eq!(joined.boundary_switches, 0, "{joined:?}");
    assert!(joined.idf1 > apart.idf1, "joining must help: {apart:?} / {joined:?}");
    assert!(joined.idf1 >= 0.9, "IDF1 at 5 fps: {joined:?}");
}
