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
