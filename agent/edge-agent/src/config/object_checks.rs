//! Checks of a pipeline's `[objects]` and `[zones]`: only a detect pipeline tracks objects;
//! labels must be the detector's; zones must be polygons inside the frame, named uniquely
//! across pipelines (their counts are published on `zones/<zone>/<label>`).

use std::collections::BTreeMap;

use super::validate::issue;
use super::{Issue, PipelineConfig};
use edge_core::model::Catalog;

pub(super) fn check_objects(path: &str, p: &PipelineConfig, catalog: &Catalog, issues: &mut Vec<Issue>) {
    let explicit = p.objects.enabled == Some(true) || !p.objects.track.is_empty();
    let Some(detect) = p.detect_stage() else {
        if !p.zones.is_empty() {
            issues.push(issue(format!("{path}.zones"), "zones need a detect stage (they count tracked objects)"));
        }
        if explicit {
            issues.push(issue(format!("{path}.objects"), "object tracking needs a detect stage"));
        }
        return;
    };
    // an unknown model is reported by the stage checks
    let Some(model) = catalog.get(&detect.model) else { return };
    let mut problems = Vec::new();
    p.objects.check(path, &model.labels, &mut problems);
    let tracked = p.objects.tracked_labels(&detect.classes, &model.labels);
    for l in tracked.iter().filter(|l| !detect.classes.is_empty() && !detect.classes.contains(l)) {
        problems.push((format!("{path}.objects.track"), format!("{l:?} is not in the detect stage's classes")));
    }
    crate::objects::zones::check(path, &p.zones, p.source.frame_size(), &tracked, &mut problems);
    if !p.zones.is_empty() && !p.tracks_objects() {
        problems.push((
            format!("{path}.zones"),
            "zones need object tracking, which is off for this source: set objects.enabled = true".into(),
        ));
    }
    issues.extend(problems.into_iter().map(|(p, m)| issue(p, m)));
}

/// A zone's counts are published under its name alone, so two pipelines cannot share one.
pub(super) fn check_zone_names(pipelines: &BTreeMap<String, PipelineConfig>, issues: &mut Vec<Issue>) {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, p) in pipelines {
        for zone in p.zones.keys() {
            if let Some(first) = owner.insert(zone, name) {
                issues.push(issue(
                    format!("pipelines.{name}.zones.{zone}"),
                    format!("pipeline {first:?} has a zone of this name already (zone names are topic levels)"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn problems(toml: &str) -> Vec<String> {
        let raw: Value = toml::from_str::<toml::Value>(toml).unwrap().try_into().unwrap();
        let catalog = Catalog::open(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")).unwrap();
        match super::super::validate::check(raw, &catalog) {
            Ok(_) => vec![],
            Err(issues) => issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect(),
        }
    }

    use super::*;

    #[test]
    fn objects_and_zones_are_checked_with_their_paths() {
        let got = problems(
            r#"
[pipelines.door]
source = { type = "camera", width = 640, height = 480 }
stages = [{ type = "detect", model = "nanodet", classes = ["person"] }]
objects = { track = ["person", "unicorn", "car"], threshold = 0.3, snapshots = { quality = 0 } }
[pipelines.door.zones.porch]
points = [[0, 0], [700, 0], [0, 100]]
coordinates = "pixels"
objects = ["cat"]
[pipelines.yard]
source = { type = "images", path = "x" }
stages = [{ type = "detect", model = "blazeface" }]
[pipelines.yard.zones.porch]
points = [[0, 0], [1, 0], [1, 1]]
[pipelines.birds]
source = { type = "camera" }
stages = [{ type = "classify" }]
objects = { enabled = true }
zones.feeder = { points = [[0, 0], [1, 0], [1, 1]] }
"#,
        );
        let expected = [
            "pipelines.birds.zones: zones need a detect stage",
            "pipelines.birds.objects: object tracking needs a detect stage",
            "pipelines.door.objects.track: the detector has no label \"unicorn\"",
            "pipelines.door.objects.threshold: must be in [min_score, 1)",
            "pipelines.door.objects.snapshots.quality: must be in [1, 100]",
            "pipelines.door.objects.track: \"unicorn\" is not in the detect stage's classes",
            "pipelines.door.objects.track: \"car\" is not in the detect stage's classes",
            "pipelines.door.zones.porch.points[1]: [700, 0] must be inside the 640x480 frame",
            "pipelines.door.zones.porch.objects: \"cat\" is not a tracked label",
            "pipelines.yard.zones: zones need object tracking, which is off for this source",
            "pipelines.yard.zones.porch: pipeline \"door\" has a zone of this name already",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "expected {e:?}, got {g:?}");
        }
    }

    #[test]
    fn a_typo_in_objects_names_the_field() {
        let got = problems(
            "[pipelines.door]\nsource = { type = \"camera\" }\nstages = [{ type = \"detect\", model = \"nanodet\" }]\n\
             objects = { max_dissapeared = 3 }\n",
        );
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("pipelines.door.objects.max_dissapeared: unknown field"), "{got:?}");
    }
}
