//! Image preprocessing vs. goldens from the reference (Pillow +
//! transformers' MiniCPMV4_6ImageProcessorPil), made by
//! `models/tools/make_image_goldens.py`.
//!
//! Run with `--nocapture` to see the measured errors.

use std::path::{Path, PathBuf};

use lookout_pipeline::image::prompt::{
    ImageTokenLayout, PlaceholderTokens, expand_image_placeholders, image_placeholder,
};
use lookout_pipeline::image::{
    AlphaMode, DecodeOptions, DownsampleMode, ImageError, ImageProcessorConfig, PatchGrid,
    RgbImage, SliceGrid, decode_image, decode_image_with, plan_slices, preprocess, resize_bicubic,
};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/image-preproc")
}

fn load_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("golden json");
    serde_json::from_str(&text).expect("valid json")
}

fn goldens() -> Value {
    load_json("goldens.json")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Expected pixels are stored as PNG; decode them with the `image` crate
/// directly (not with the code under test).
fn load_png(rel: &str) -> image::DynamicImage {
    image::load_from_memory_with_format(&read(rel), image::ImageFormat::Png).expect("golden png")
}

fn u(v: &Value) -> u32 {
    v.as_u64().expect("integer") as u32
}

/// Same pattern as `synth` in make_image_goldens.py.
fn synth(w: u32, h: u32, seed: u32) -> RgbImage {
    let (w64, h64, s) = (i64::from(w), i64::from(h), i64::from(seed));
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h64 {
        for x in 0..w64 {
            let r = match x % 11 {
                5 => 0,
                6 => 255,
                _ => x * 255 / (w64 - 1).max(1),
            };
            let g = (y * 255 / (h64 - 1).max(1) + s * 37) % 256;
            let b = if ((x / 7) + (y / 5)) % 2 == 0 {
                200
            } else {
                30
            } + (x * y + s) % 17;
            data.extend_from_slice(&[r as u8, g as u8, b as u8]);
        }
    }
    RgbImage::from_raw_rgb(w, h, data).unwrap()
}

fn config_with(kwargs: &Value) -> ImageProcessorConfig {
    let mut base = json!({});
    for (k, v) in kwargs.as_object().expect("kwargs object") {
        base[k] = v.clone();
    }
    ImageProcessorConfig::from_json_str(&base.to_string()).expect("config")
}

fn grid_of(v: &Value) -> Option<SliceGrid> {
    let (rows, cols) = (u(&v[0]), u(&v[1]));
    (rows > 0 && cols > 0).then_some(SliceGrid { rows, cols })
}

fn patch_grids(v: &Value) -> Vec<PatchGrid> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| PatchGrid {
            rows: u(&p[0]),
            cols: u(&p[1]),
        })
        .collect()
}

/// (max abs diff, number of differing bytes)
fn byte_diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len(), "length");
    a.iter().zip(b).fold((0, 0), |(m, n), (x, y)| {
        let d = x.abs_diff(*y);
        (m.max(d), n + usize::from(d > 0))
    })
}

#[test]
fn goldens_record_their_backend() {
    let g = goldens();
    assert_eq!(g["backend"], "pil");
    assert_eq!(g["image_processor_class"], "MiniCPMV4_6ImageProcessorPil");
}

#[test]
fn default_config_matches_reference_defaults() {
    let g = goldens();
    let cfg =
        ImageProcessorConfig::from_json_str(&g["default_processor_config"].to_string()).unwrap();
    assert_eq!(cfg, ImageProcessorConfig::default());
    assert_eq!(
        ImageProcessorConfig::from_json_str("{}").unwrap(),
        ImageProcessorConfig::default()
    );
    // Nested processor_config.json form and scalar mean/std.
    let nested = r#"{"image_processor": {"max_slice_nums": 4, "image_mean": 0.25, "downsample_mode": "4x"}}"#;
    let cfg = ImageProcessorConfig::from_json_str(nested).unwrap();
    assert_eq!(cfg.max_slice_nums, 4);
    assert_eq!(cfg.image_mean, [0.25; 3]);
    assert_eq!(cfg.downsample_mode, DownsampleMode::X4);
    for bad in [
        r#"{"downsample_mode": "8x"}"#,
        r#"{"patch_size": 0}"#,
        r#"{"resample": 2}"#,
        r#"{"do_resize": false}"#,
        r#"{"image_std": [0.5, 0.0, 0.5]}"#,
        r#"{"image_mean": [0.5, 0.5]}"#,
        "not json",
    ] {
        assert!(
            matches!(
                ImageProcessorConfig::from_json_str(bad),
                Err(ImageError::Config(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn resize_matches_pillow_bicubic() {
    let g = goldens();
    let mut worst = 0u8;
    for case in g["resize"].as_array().unwrap() {
        let src = synth(u(&case["src_w"]), u(&case["src_h"]), u(&case["seed"]));
        let (dw, dh) = (u(&case["dst_w"]), u(&case["dst_h"]));
        let got = resize_bicubic(&src, dw, dh).unwrap();
        let want = load_png(case["expected"].as_str().unwrap()).to_rgb8();
        assert_eq!((got.width(), got.height()), want.dimensions());
        let (max, n) = byte_diff(got.as_raw(), want.as_raw());
        eprintln!(
            "resize {}x{} -> {dw}x{dh}: max diff {max}, {n} bytes differ",
            case["src_w"], case["src_h"]
        );
        worst = worst.max(max);
    }
    eprintln!("resize: worst max abs diff vs Pillow = {worst} levels");
    assert_eq!(worst, 0, "resize must be bit-exact with Pillow");
}

#[test]
fn resize_rejects_degenerate_targets() {
    let img = synth(8, 8, 0);
    assert!(matches!(
        resize_bicubic(&img, 0, 5),
        Err(ImageError::InvalidSize { .. })
    ));
    assert!(matches!(
        resize_bicubic(&img, 100_000, 100_000),
        Err(ImageError::InvalidSize { .. })
    ));
}

/// Reference value of a stored u8 (see tensor_to_u8 in the golden script).
fn reference_value(v: u8) -> f32 {
    ((f64::from(v) * (1.0 / 255.0)) as f32 - 0.5) / 0.5
}

#[test]
fn pipeline_matches_reference_processor() {
    let g = goldens();
    let mut worst = 0f32;
    for case in g["pipeline"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = config_with(&case["processor_kwargs"]);
        let s = &case["synth"];
        let img = synth(u(&s["w"]), u(&s["h"]), u(&s["seed"]));
        let out = preprocess(&img, &cfg).unwrap();

        assert_eq!(out.grid, grid_of(&case["grid"]), "{name}: grid");
        assert_eq!(
            out.target_sizes(),
            patch_grids(&case["target_sizes"]),
            "{name}: target sizes"
        );
        assert_eq!(
            out.all().count() as u64,
            case["num_patches"].as_u64().unwrap()
        );

        let shape: Vec<usize> = case["pixel_values_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (values, len) = out.concat_pixel_values();
        assert_eq!(
            [1, 3, cfg.patch_size as usize, len],
            shape[..],
            "{name}: shape"
        );

        let want = load_png(case["expected"].as_str().unwrap()).to_luma8();
        assert_eq!(want.as_raw().len(), values.len(), "{name}: element count");
        let max = values
            .iter()
            .zip(want.as_raw())
            .map(|(got, &w)| (got - reference_value(w)).abs())
            .fold(0f32, f32::max);
        eprintln!(
            "pipeline {name}: grid {:?}, {} values, max abs diff {max:e}",
            out.grid,
            values.len()
        );
        worst = worst.max(max);
    }
    eprintln!("pipeline: worst max abs diff vs reference = {worst:e}");
    assert_eq!(worst, 0.0, "pixel tensors must be bit-exact");
}

#[test]
fn slice_accessors_and_layout() {
    let cfg = config_with(&json!({"scale_resolution": 112, "max_slice_nums": 9}));
    let img = synth(300, 200, 21);
    let out = preprocess(&img, &cfg).unwrap();
    let g = out.grid.unwrap();
    assert_eq!((g.rows, g.cols), (2, 3));
    assert_eq!(out.slices.len(), 6);
    assert!(out.slice(1, 2).is_some() && out.slice(2, 0).is_none() && out.slice(0, 3).is_none());
    // Layout check on the overview: out[c][i][(ph*nw+pw)*P+j] == norm(img[c][ph*P+i][pw*P+j]).
    let ov = &out.overview;
    let p = 14usize;
    let resized = resize_bicubic(&img, ov.size.width, ov.size.height).unwrap();
    let (nw, len) = (ov.patches.cols as usize, ov.seq_len(14));
    for (c, i, ph, pw, j) in [(0, 0, 0, 0, 0), (1, 13, 1, 2, 7), (2, 5, 3, 0, 13)] {
        let (y, x) = (ph * p + i, pw * p + j);
        let byte = resized.as_raw()[(y * ov.size.width as usize + x) * 3 + c];
        assert_eq!(
            ov.pixel_values[(c * p + i) * len + (ph * nw + pw) * p + j],
            reference_value(byte)
        );
    }
}

#[test]
fn geometry_matches_reference_for_many_sizes() {
    let geo = load_json("geometry.json");
    assert_eq!(geo["backend"], "pil");
    let cases = geo["cases"].as_array().unwrap();
    assert!(cases.len() > 300);
    for case in cases {
        let (w, h) = (u(&case["w"]), u(&case["h"]));
        let cfg = config_with(&case["config"]);
        let plan = plan_slices(w, h, &cfg).unwrap();
        let ctx = format!("{w}x{h} {}", case["config"]);
        assert_eq!(plan.grid, grid_of(&case["grid"]), "{ctx}: grid");
        let ts = plan.target_sizes();
        assert_eq!(
            ts,
            patch_grids(&case["target_sizes"]),
            "{ctx}: target sizes"
        );
        let len: usize = ts.iter().map(|t| t.num_patches() * 14).sum();
        assert_eq!(
            len as u64,
            case["pixel_values_len"].as_u64().unwrap(),
            "{ctx}: len"
        );
        if let (Some(g), Some(r), Some(s)) = (plan.grid, plan.refine, plan.slice) {
            assert_eq!((r.width, r.height), (s.width * g.cols, s.height * g.rows));
            let align = 14 * cfg.downsample_mode.merge_factor();
            assert_eq!((s.width % align, s.height % align), (0, 0), "{ctx}");
        }
    }
}

#[test]
fn prompt_placeholders_match_processor() {
    let g = goldens();
    let tokens = PlaceholderTokens::default();
    let t = &g["tokens"];
    assert_eq!(tokens.image_token, t["image_token"]);
    assert_eq!(tokens.slice_start, t["slice_start_token"]);
    assert_eq!(tokens.image_id_end, t["image_id_end_token"]);
    for case in g["prompt"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = config_with(&case["processor_kwargs"]);
        let layouts: Vec<ImageTokenLayout> = case["sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let plan = plan_slices(u(&s[0]), u(&s[1]), &cfg).unwrap();
                ImageTokenLayout::from_plan(&plan, cfg.downsample_mode)
            })
            .collect();
        let got = expand_image_placeholders(
            case["text"].as_str().unwrap(),
            &layouts,
            &tokens,
            case["use_image_id"].as_bool().unwrap(),
        )
        .unwrap();
        assert_eq!(got, case["expected"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn prompt_from_preprocessed_image_and_mismatch() {
    let cfg = config_with(&json!({"scale_resolution": 112}));
    let out = preprocess(&synth(300, 200, 1), &cfg).unwrap();
    let layout = out.token_layout(cfg.downsample_mode);
    let plan = plan_slices(300, 200, &cfg).unwrap();
    assert_eq!(
        layout,
        ImageTokenLayout::from_plan(&plan, cfg.downsample_mode)
    );
    let tokens = PlaceholderTokens::default();
    let p = image_placeholder(&layout, &tokens, Some(0));
    assert!(p.starts_with("<image_id>0</image_id><image><|image_pad|>"));
    assert_eq!(p.matches("<|image_pad|>").count(), layout.total_tokens());
    assert_eq!(p.matches('\n').count(), out.grid.unwrap().rows as usize - 1);
    let err = expand_image_placeholders("<|image_pad|><|image_pad|>", &[layout], &tokens, true);
    assert!(matches!(
        err,
        Err(ImageError::PlaceholderMismatch {
            placeholders: 2,
            images: 1
        })
    ));
    assert_eq!(
        expand_image_placeholders("plain", &[], &tokens, true).unwrap(),
        "plain"
    );
}

/// Allowed max abs difference per decoded fixture: lossless formats must be
/// exact; lossy ones go through a different IDCT / YUV->RGB than
/// libjpeg-turbo / libwebp.
fn decode_tolerance(name: &str) -> u8 {
    if name.ends_with(".jpg") {
        JPEG_TOLERANCE
    } else if name.starts_with("lossy") {
        WEBP_LOSSY_TOLERANCE
    } else {
        0
    }
}
const JPEG_TOLERANCE: u8 = 4;
const WEBP_LOSSY_TOLERANCE: u8 = 1;

#[test]
fn decode_matches_pillow() {
    let g = goldens();
    for case in g["decode"].as_array().unwrap() {
        if case["kind"] != "pixels" {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let img = decode_image(&read(case["input"].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (img.width(), img.height()),
            (u(&case["width"]), u(&case["height"])),
            "{name}: dims (EXIF orientation?)"
        );
        let want = load_png(case["expected"].as_str().unwrap()).to_rgb8();
        let (max, n) = byte_diff(img.as_raw(), want.as_raw());
        let mean = img
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / img.as_raw().len() as f64;
        eprintln!(
            "decode {name}: max diff {max}, mean {mean:.3}, {n}/{} bytes differ",
            img.as_raw().len()
        );
        assert!(max <= decode_tolerance(name), "{name}: max diff {max}");
    }
}

#[test]
fn decode_errors_are_reported_not_panicked() {
    let g = goldens();
    for case in g["decode"].as_array().unwrap() {
        if case["kind"] != "error" {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let err = decode_image(&read(case["input"].as_str().unwrap()))
            .expect_err(&format!("{name} must not decode"));
        eprintln!("decode {name}: {err}");
        let ok = match name {
            "empty.bin" => matches!(err, ImageError::Empty),
            "garbage.bin" => matches!(err, ImageError::UnsupportedFormat(_)),
            "huge_dims.png" | "huge_dims.jpg" => matches!(err, ImageError::TooLarge { .. }),
            "zero_width.png" => matches!(err, ImageError::ZeroSize { .. } | ImageError::Decode(_)),
            _ => matches!(err, ImageError::Decode(_)),
        };
        assert!(ok, "{name}: unexpected error kind {err:?}");
    }
    // Every prefix of a valid file fails cleanly (no panic) or decodes.
    let png = read("inputs/rgb.png");
    let jpg = read("inputs/q85_420.jpg");
    let webp = read("inputs/lossy.webp");
    for data in [&png, &jpg, &webp] {
        for cut in (0..data.len()).step_by(7) {
            let _ = decode_image(&data[..cut]);
        }
    }
    // Unsupported container.
    assert!(matches!(
        decode_image(b"GIF89a\x01\x00\x01\x00"),
        Err(ImageError::UnsupportedFormat(_))
    ));
}

#[test]
fn truncated_jpegs_fail_like_pillow_but_trailers_are_fine() {
    for name in [
        "inputs/q85_420.jpg",
        "inputs/progressive.jpg",
        "inputs/orient_6.jpg",
    ] {
        let jpg = read(name);
        let full = decode_image(&jpg).unwrap();
        // Every strict prefix is an error (the decoder alone would pad with grey).
        for cut in 0..jpg.len() {
            assert!(
                decode_image(&jpg[..cut]).is_err(),
                "{name} cut at {cut}/{}",
                jpg.len()
            );
        }
        // Data after EOI (phone trailers, motion-photo videos) is ignored, as by Pillow.
        let mut trailer = jpg.clone();
        trailer.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
        assert_eq!(decode_image(&trailer).unwrap(), full, "{name} with trailer");
        // An EOI inside a metadata segment does not hide truncation.
        let mut app = jpg[..2].to_vec();
        app.extend_from_slice(&[0xFF, 0xEF, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD9]);
        app.extend_from_slice(&jpg[2..]);
        assert_eq!(decode_image(&app).unwrap(), full, "{name} with APP15");
        assert!(
            decode_image(&app[..app.len() * 2 / 3]).is_err(),
            "{name} APP15 truncated"
        );
    }
}

#[test]
fn pixel_cap_is_configurable() {
    let data = read("inputs/rgb.png"); // 40x30
    let tight = DecodeOptions {
        max_pixels: 40 * 30 - 1,
        ..DecodeOptions::default()
    };
    assert!(matches!(
        decode_image_with(&data, &tight),
        Err(ImageError::TooLarge {
            width: 40,
            height: 30,
            ..
        })
    ));
    let exact = DecodeOptions {
        max_pixels: 40 * 30,
        ..DecodeOptions::default()
    };
    assert!(decode_image_with(&data, &exact).is_ok());
}

#[test]
fn alpha_can_be_dropped_instead_of_composited() {
    let data = read("inputs/rgba_all_alpha.png");
    let drop = DecodeOptions {
        alpha: AlphaMode::Drop,
        ..DecodeOptions::default()
    };
    let img = decode_image_with(&data, &drop).unwrap();
    let rgba = image::load_from_memory(&data).unwrap().to_rgba8();
    let stripped: Vec<u8> = rgba
        .as_raw()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    assert_eq!(img.as_raw(), &stripped[..]);
}

#[test]
fn exif_orientation_can_be_ignored() {
    let data = read("inputs/orient_6.png"); // stored 12x8, displayed 8x12
    assert_eq!(
        decode_image(&data)
            .map(|i| (i.width(), i.height()))
            .unwrap(),
        (8, 12)
    );
    let raw = DecodeOptions {
        apply_exif_orientation: false,
        ..DecodeOptions::default()
    };
    let img = decode_image_with(&data, &raw).unwrap();
    assert_eq!((img.width(), img.height()), (12, 8));
}

#[test]
fn raw_frames_are_validated() {
    assert!(RgbImage::from_raw_rgb(2, 2, vec![0; 12]).is_ok());
    assert!(matches!(
        RgbImage::from_raw_rgb(2, 2, vec![0; 11]),
        Err(ImageError::RawBufferSize { .. })
    ));
    assert!(matches!(
        RgbImage::from_raw_rgb(0, 2, vec![]),
        Err(ImageError::ZeroSize { .. })
    ));
    assert!(matches!(
        plan_slices(0, 5, &ImageProcessorConfig::default()),
        Err(ImageError::ZeroSize { .. })
    ));
}

#[test]
fn big_photo_end_to_end() {
    // 4000x3000, default config: geometry from the goldens, pixels sanity only.
    let cfg = ImageProcessorConfig::default();
    let img = synth(4000, 3000, 5);
    let out = preprocess(&img, &cfg).unwrap();
    let plan = plan_slices(4000, 3000, &cfg).unwrap();
    assert_eq!(out.grid, plan.grid);
    assert_eq!(out.target_sizes(), plan.target_sizes());
    for s in out.all() {
        assert_eq!(s.pixel_values.len(), 3 * 14 * s.seq_len(14));
        assert!(s.pixel_values.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
