//! The files compiled into the binary (see [`mobilenetv3::bundled`]): the default model, the most accurate of
//! `trained_models/` (the others load from that folder), and the sample photos of `test_images/` (their
//! sources and licences: `test_images/SOURCES.md`).

use mobilenetv3::bundled::Bundle;

pub static BUNDLE: Bundle<'static> = Bundle {
    model: (
        "mobilenetv3_large_1.0.safetensors",
        include_bytes!("../../trained_models/mobilenetv3_large_1.0.safetensors"),
    ),
    samples: &[
        ("apple.jpg", include_bytes!("../../test_images/apple.jpg")),
        ("butterfly.jpg", include_bytes!("../../test_images/butterfly.jpg")),
        ("castle_palace.jpg", include_bytes!("../../test_images/castle_palace.jpg")),
        ("cup_coffee.jpg", include_bytes!("../../test_images/cup_coffee.jpg")),
        ("man_camera.png", include_bytes!("../../test_images/man_camera.png")),
        ("orange.jpg", include_bytes!("../../test_images/orange.jpg")),
        ("raccoon.jpg", include_bytes!("../../test_images/raccoon.jpg")),
        ("rocket.jpg", include_bytes!("../../test_images/rocket.jpg")),
        ("rose.png", include_bytes!("../../test_images/rose.png")),
        ("squirrel.jpg", include_bytes!("../../test_images/squirrel.jpg")),
        ("woman_astronaut.jpg", include_bytes!("../../test_images/woman_astronaut.jpg")),
        ("woman_grace_hopper.jpg", include_bytes!("../../test_images/woman_grace_hopper.jpg")),
        ("SOURCES.md", include_bytes!("../../test_images/SOURCES.md")),
    ],
};
