//! The model zoo's yardstick: the reference repository's top-1 accuracy on the CIFAR-100 test split after 20
//! epochs of its recipe, for the six variants of its results table, and how our models compare with it.

/// (variant, top-1 %) as the reference reports them.
pub(crate) const REFERENCE_TOP1: [(&str, f64); 6] = [
    ("small_0.25", 60.13),
    ("small_0.5", 66.37),
    ("small_1.0", 69.44),
    ("large_0.25", 65.03),
    ("large_0.5", 69.50),
    ("large_1.0", 71.75),
];

/// The reference's top-1 (%) for a variant name such as `large_1.0`.
pub(crate) fn reference_top1(variant: &str) -> Option<f64> {
    REFERENCE_TOP1.iter().find(|(v, _)| *v == variant).map(|(_, t)| *t)
}

/// (variant, top-1 as a fraction) of every model file in `dir` whose header records a training result; files
/// are described from their headers only (see [`crate::model::weights::describe`]).
pub fn trained_top1(dir: &std::path::Path) -> Vec<(String, f64)> {
    let (usable, _) = crate::classify::scan_models(dir, &Default::default());
    usable.into_iter().filter_map(|m| Some((m.summary.config.name(), m.summary.top1()?))).collect()
}

/// One model on the accuracy-vs-latency chart.
#[derive(Clone, Debug, PartialEq)]
pub struct ZooPoint {
    pub variant: String,
    /// Batch-1 latency in ms (the median of a latency run).
    pub latency_ms: f64,
    /// Top-1 in %.
    pub top1: f64,
}

/// Our best model per variant (by the top-1 recorded in its file) and the reference's figure, each at the
/// variant's measured batch-1 latency. `models` are (variant, top-1 as a fraction); `latency` (variant, ms).
pub fn accuracy_points(models: &[(String, f64)], latency: &[(String, f64)]) -> (Vec<ZooPoint>, Vec<ZooPoint>) {
    let mut ours: Vec<ZooPoint> = Vec::new();
    for (variant, top1) in models {
        let Some(&(_, ms)) = latency.iter().find(|(v, _)| v == variant) else { continue };
        match ours.iter_mut().find(|p| &p.variant == variant) {
            Some(p) if p.top1 >= top1 * 100.0 => {}
            Some(p) => p.top1 = top1 * 100.0,
            None => ours.push(ZooPoint { variant: variant.clone(), latency_ms: ms, top1: top1 * 100.0 }),
        }
    }
    let reference = latency
        .iter()
        .filter_map(|(v, ms)| reference_top1(v).map(|t| ZooPoint { variant: v.clone(), latency_ms: *ms, top1: t }))
        .collect();
    (ours, reference)
}

/// Where one variant's labels go on an accuracy-against-latency chart.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelPlace<'a> {
    pub variant: &'a str,
    /// Our point and the reference's for the variant (either may be missing).
    pub ours: Option<&'a ZooPoint>,
    pub reference: Option<&'a ZooPoint>,
    /// Labels to the right of the points (else to the left).
    pub right: bool,
    /// Our label above our point and the reference's below its point (else the other way round).
    pub ours_above: bool,
}

/// Label places that keep close points' labels apart: a variant's two labels on one side of its points, the
/// higher point's above it and the lower's below (however close ours and the reference's figures are), and
/// variants next to each other in latency on opposite sides (two variants can be within 0.1 ms).
pub(crate) fn label_places<'a>(ours: &'a [ZooPoint], reference: &'a [ZooPoint]) -> Vec<LabelPlace<'a>> {
    let mut order: Vec<&ZooPoint> = ours.iter().chain(reference).collect();
    order.sort_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms));
    let mut variants: Vec<&str> = Vec::new();
    for p in order {
        if !variants.contains(&p.variant.as_str()) {
            variants.push(&p.variant);
        }
    }
    variants
        .into_iter()
        .enumerate()
        .map(|(i, variant)| {
            let mine = ours.iter().find(|p| p.variant == variant);
            let theirs = reference.iter().find(|p| p.variant == variant);
            let ours_above = match (mine, theirs) {
                (Some(m), Some(t)) => m.top1 >= t.top1,
                _ => true,
            };
            LabelPlace { variant, ours: mine, reference: theirs, right: i % 2 == 0, ours_above }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_model_of_each_timed_variant_is_placed_beside_the_reference() {
        let models =
            vec![("small_0.25".to_string(), 0.5877), ("small_0.25".into(), 0.6018), ("large_1.0".into(), 0.70)];
        let latency = vec![("small_0.25".to_string(), 0.44), ("small_0.5".into(), 0.74)];
        let (ours, reference) = accuracy_points(&models, &latency);
        assert_eq!(ours, vec![ZooPoint { variant: "small_0.25".into(), latency_ms: 0.44, top1: 60.18 }]);
        assert_eq!(reference.len(), 2);
        assert_eq!((reference[1].variant.as_str(), reference[1].top1), ("small_0.5", 66.37));
    }

    #[test]
    fn labels_alternate_sides_in_latency_order_and_the_higher_point_is_labelled_above() {
        let p = |v: &str, ms: f64, t: f64| ZooPoint { variant: v.into(), latency_ms: ms, top1: t };
        let ours = [p("small_1.0", 1.44, 69.91), p("large_0.5", 1.57, 69.38)];
        let reference = [p("large_0.5", 1.57, 69.50), p("small_1.0", 1.44, 69.44), p("small_0.25", 0.4, 60.13)];
        let places = label_places(&ours, &reference);
        let got: Vec<(&str, bool, bool, bool)> =
            places.iter().map(|l| (l.variant, l.right, l.ours_above, l.ours.is_some())).collect();
        assert_eq!(
            got,
            [("small_0.25", true, true, false), ("small_1.0", false, true, true), ("large_0.5", true, false, true)]
        );
        assert_eq!(places[2].reference.map(|r| r.top1), Some(69.50));
    }
}
