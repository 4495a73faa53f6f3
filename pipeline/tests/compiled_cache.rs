//! The compiled cache: a first load writes the quantized weights, later loads map them, and every
//! load gives bit-identical image features, logits and tokens. Damaged, foreign and unwritable
//! caches are rebuilt or skipped, never trusted and never fatal.

mod support;

use std::path::{Path, PathBuf};

use lookout_models::Precision;
use lookout_pipeline::compiled::CacheUse;
use lookout_pipeline::engine::{Engine, EngineOptions, Request};
use lookout_pipeline::image::decode_image;
use support::{copy_fixture, fixture};

const MODEL: &str = "minicpmv46-tiny-16x";

fn load(dir: &Path, cache: Option<PathBuf>) -> Engine {
    Engine::load(
        dir,
        &EngineOptions {
            precision: Precision::Q4_0,
            threads: Some(2),
            compiled_cache: cache,
        },
    )
    .unwrap()
}

/// What a user would compare: the image features, the first logits, and a greedy description.
#[derive(Debug, PartialEq)]
struct Outputs {
    features: Vec<u32>,
    logits: Vec<u32>,
    tokens: Vec<u32>,
}

fn outputs(engine: &Engine) -> Outputs {
    let bytes = std::fs::read(fixture("images").join("square_300x300.png")).unwrap();
    let image = decode_image(&bytes).unwrap();
    let prompt = engine
        .image_prompt(&image, "What is in the picture?", None)
        .unwrap();
    let mut state = engine.lm.new_state().unwrap();
    let logits = engine.lm.forward(&mut state, &prompt.embeds).unwrap();
    let mut request = Request::new("What is in the picture?");
    request.image = Some(image);
    request.max_tokens = 12;
    let description = engine.describe(&request, &mut |_| {}).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect();
    Outputs {
        features: bits(&prompt.embeds),
        logits: bits(&logits),
        tokens: description.tokens,
    }
}

fn uses(engine: &Engine) -> (CacheUse, CacheUse) {
    (
        engine.lm.compiled_cache().clone(),
        engine
            .vision
            .as_ref()
            .unwrap()
            .encoder
            .compiled_cache()
            .clone(),
    )
}

fn assert_written(used: &CacheUse, because: &str) -> PathBuf {
    match used {
        CacheUse::Written { path, reason } => {
            assert!(reason.contains(because), "written because {reason:?}");
            path.clone()
        }
        other => panic!("expected the cache to be written ({because}), got {other:?}"),
    }
}

fn assert_mapped(used: &CacheUse) {
    assert!(
        matches!(used, CacheUse::Mapped { .. }),
        "expected the cache to be mapped, got {used:?}"
    );
}

#[test]
fn later_loads_map_the_first_loads_weights_and_answer_identically() {
    let root = std::env::temp_dir().join(format!("lookout-compiled-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cache = root.join("compiled");
    let model = fixture(MODEL);

    let reference = outputs(&load(&model, None));

    // First start: nothing cached yet.
    let first = load(&model, Some(cache.clone()));
    let (lm, vision) = uses(&first);
    let lm_file = assert_written(&lm, "no cache file yet");
    let vision_file = assert_written(&vision, "no cache file yet");
    assert_eq!(outputs(&first), reference, "first load");
    drop(first);

    // Later start: everything mapped, same outputs to the bit.
    let later = load(&model, Some(cache.clone()));
    let (lm, vision) = uses(&later);
    assert_mapped(&lm);
    assert_mapped(&vision);
    assert_eq!(outputs(&later), reference, "mapped load");
    drop(later);

    // A truncated file is rebuilt; the intact one is still used.
    let bytes = std::fs::read(&lm_file).unwrap();
    std::fs::write(&lm_file, &bytes[..bytes.len() / 2]).unwrap();
    let after_truncation = load(&model, Some(cache.clone()));
    let (lm, vision) = uses(&after_truncation);
    assert_written(&lm, "truncated");
    assert_mapped(&vision);
    assert_eq!(outputs(&after_truncation), reference, "after truncation");
    drop(after_truncation);

    // Another part's file under this part's name is foreign: rebuilt, not read.
    std::fs::copy(&vision_file, &lm_file).unwrap();
    let after_swap = load(&model, Some(cache.clone()));
    assert_written(&uses(&after_swap).0, "made from something else");
    assert_eq!(outputs(&after_swap), reference, "after a foreign file");
    drop(after_swap);

    // A copy of the checkpoint is the same content: its loads map the same files. Changing
    // the copy's config makes it another checkpoint, with caches of its own.
    let copy = copy_fixture(MODEL, "compiled-cache-copy");
    assert_mapped(&uses(&load(&copy, Some(cache.clone()))).0);
    let config = copy.join("config.json");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push('\n');
    std::fs::write(&config, text).unwrap();
    let changed = load(&copy, Some(cache.clone()));
    let (lm, _) = uses(&changed);
    assert_ne!(assert_written(&lm, "no cache file yet"), lm_file);
    drop(changed);

    // A cache that cannot be written costs the next start its speed, not the model.
    let blocked = root.join("a-file");
    std::fs::write(&blocked, "not a directory").unwrap();
    let unwritable = load(&model, Some(blocked.join("compiled")));
    assert!(
        matches!(uses(&unwritable).0, CacheUse::NotWritten { .. }),
        "{:?}",
        uses(&unwritable).0
    );
    assert_eq!(outputs(&unwritable), reference, "without a writable cache");

    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&copy).unwrap();
}

#[test]
fn float_weights_are_not_cached() {
    let root = std::env::temp_dir().join(format!("lookout-compiled-f32-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let engine = Engine::load(
        &fixture(MODEL),
        &EngineOptions {
            precision: Precision::F32,
            threads: Some(2),
            compiled_cache: Some(root.clone()),
        },
    )
    .unwrap();
    assert_eq!(uses(&engine), (CacheUse::Off, CacheUse::Off));
    assert!(!root.exists());
}
