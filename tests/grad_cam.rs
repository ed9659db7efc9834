//! Grad-CAM against PyTorch: the raw maps (before upsampling) of the shipped models on a sample photo, for its
//! top class and its third most likely, equal PyTorch's autograd Grad-CAM of the same weights
//! (`tools/reference/gen_gradcam.py` wrote the fixtures) within 1e-4 of the map's largest value.

use candle_core::Device;
use mobilenetv3::exec::inference::InferencePlan;
use mobilenetv3::model::weights::{load_model, LoadOptions};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn grad_cam_maps_match_pytorch_autograd_for_both_networks_at_two_widths() {
    for name in ["small_0.25", "small_1.0", "large_0.25", "large_1.0"] {
        let fixture = root().join(format!("tests/fixtures/gradcam_{name}.safetensors"));
        let f = candle_core::safetensors::load(&fixture, &Device::Cpu).unwrap();
        let x = f["input"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let classes = f["classes"].to_vec1::<i64>().unwrap();
        let model = root().join(format!("trained_models/mobilenetv3_{name}.safetensors"));
        let loaded = load_model(&model, &Device::Cpu, &LoadOptions::default()).unwrap();
        let plan = InferencePlan::new(&loaded.meta.config.spec(), &loaded.params).unwrap();
        for (which, class) in [("cam_top", None), ("cam_third", Some(classes[1] as usize))] {
            let want = f[which].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let cam = plan.grad_cam(&x, 32, class);
            assert_eq!(cam.class as i64, if class.is_none() { classes[0] } else { classes[1] }, "{name} {which}");
            assert_eq!((cam.side, cam.map.len()), (8, want.len()), "{name} {which}");
            let largest = want.iter().fold(0f32, |m, v| m.max(*v));
            assert!(largest > 0.05, "{name} {which}: the reference map is flat ({largest})");
            let gap = cam.map.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(
                gap <= 1e-4 * largest,
                "{name} {which}: the map differs from PyTorch's by {gap:.2e} (largest value {largest:.3})"
            );
            println!("{name} {which} (class {}): largest gap {:.1e} of the map's largest", cam.class, gap / largest);
        }
    }
}

/// The peak of a map is the centre of its largest cell, as fractions of the image.
#[test]
fn the_peak_is_the_centre_of_the_largest_cell() {
    let cam = mobilenetv3::exec::inference::GradCam {
        class: 0,
        logits: vec![0.0],
        side: 4,
        map: vec![0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    };
    assert_eq!(cam.peak(), (0.875, 0.375));
}
