//! MiniCPM-V 4.6 image preprocessing, in pure Rust.
//!
//! A port of transformers' `MiniCPMV4_6ImageProcessorPil` (the Pillow
//! backend) plus the placeholder-text part of `MiniCPMV4_6Processor`,
//! checked against goldens produced by the reference itself
//! (`models/tools/make_image_goldens.py`).
//!
//! Flow for one image:
//! 1. [`decode_image`]: bytes to upright RGB (EXIF orientation applied,
//!    alpha composited over white like the processor's `convert_to_rgb`),
//!    or [`RgbImage::from_raw_rgb`] for frames already in memory.
//! 2. [`plan_slices`]: overview size, slice grid and slice size.
//! 3. [`resize_bicubic`]: Pillow-exact BICUBIC resize (overview, refined).
//! 4. normalisation: rescale + normalise (bit-identical to the reference's
//!    f64-rescale-then-f32 arithmetic) and flatten into the
//!    `[3, patch, n_patches * patch]` layout the vision tower reads
//!    (see [`Slice::pixel_values`]).
//! 5. [`prompt`]: the `<image>…</image><slice>…</slice>` placeholder text
//!    to tokenize.
//!
//! [`preprocess`] runs steps 2–4.

mod config;
mod decode;
mod error;
mod normalize;
pub mod prompt;
mod resize;
mod slice;

pub use config::{DownsampleMode, ImageProcessorConfig, PIL_BICUBIC};
pub use decode::{
    AlphaMode, DEFAULT_MAX_PIXELS, DecodeOptions, RgbImage, decode_image, decode_image_with,
};
pub use error::ImageError;
pub use resize::resize_bicubic;
pub use slice::{
    PatchGrid, Size, SliceGrid, SlicePlan, ensure_divide, find_best_resize, get_refine_size,
    get_sliced_grid, plan_slices,
};

use normalize::{NormalizeLut, Region, patchify_normalized};

/// One image fed to the vision tower: the overview or one grid slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// Normalised pixels, shape `[3, P, N * P]` with `P = patch_size` and
    /// `N = patches.num_patches()` (the reference's `reshape_by_patch`):
    /// `pixel_values[(c * P + i) * N * P + (ph * patches.cols + pw) * P + j]`
    /// is channel `c` of pixel (row `ph * P + i`, column `pw * P + j`). The
    /// `P x P` patches sit side by side in row-major patch order, so a
    /// `Conv2d(kernel = stride = P)` over `[1, 3, P, N * P]` yields the patch
    /// embeddings in row-major order.
    pub pixel_values: Vec<f32>,
    /// Patch grid (`target_sizes` row): `rows = height / patch_size`,
    /// `cols = width / patch_size`.
    pub patches: PatchGrid,
    /// Size in pixels of the resized slice.
    pub size: Size,
}

impl Slice {
    /// Length of the last axis of `pixel_values`.
    pub fn seq_len(&self, patch_size: u32) -> usize {
        self.patches.num_patches() * patch_size as usize
    }
}

/// The processed form of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessedImage {
    /// The whole image at ~`scale_resolution²` (the "source" image).
    pub overview: Slice,
    /// Grid of `slices`; `None` when the image was not sliced.
    pub grid: Option<SliceGrid>,
    /// Slices in row-major order (`slices[r * grid.cols + c]`).
    pub slices: Vec<Slice>,
    /// Patch size the tensors are laid out with.
    pub patch_size: u32,
}

impl PreprocessedImage {
    /// Slice at grid row `row`, column `col`.
    pub fn slice(&self, row: u32, col: u32) -> Option<&Slice> {
        let g = self.grid?;
        if row >= g.rows || col >= g.cols {
            return None;
        }
        self.slices.get((row * g.cols + col) as usize)
    }

    /// Overview then slices: the order of `pixel_values` / `target_sizes`
    /// and of the placeholders in the prompt.
    pub fn all(&self) -> impl Iterator<Item = &Slice> {
        std::iter::once(&self.overview).chain(&self.slices)
    }

    /// The processor's `target_sizes` for this image.
    pub fn target_sizes(&self) -> Vec<PatchGrid> {
        self.all().map(|s| s.patches).collect()
    }

    /// All slices concatenated along the last axis, exactly the reference's
    /// `pixel_values[0]` for this image: shape `[3, patch_size, total_len]`.
    /// Returns `(data, total_len)`.
    pub fn concat_pixel_values(&self) -> (Vec<f32>, usize) {
        let p = self.patch_size as usize;
        let total: usize = self.all().map(|s| s.seq_len(self.patch_size)).sum();
        let mut out = Vec::with_capacity(3 * p * total);
        for row in 0..3 * p {
            for s in self.all() {
                let len = s.seq_len(self.patch_size);
                out.extend_from_slice(&s.pixel_values[row * len..(row + 1) * len]);
            }
        }
        (out, total)
    }

    /// Token counts for the prompt placeholders.
    pub fn token_layout(&self, mode: DownsampleMode) -> prompt::ImageTokenLayout {
        prompt::ImageTokenLayout {
            overview_tokens: self.overview.patches.num_tokens(mode),
            grid: self.grid,
            slice_tokens: self
                .slices
                .iter()
                .map(|s| s.patches.num_tokens(mode))
                .collect(),
        }
    }
}

/// Run the MiniCPM-V 4.6 image processor on one RGB image.
pub fn preprocess(
    img: &RgbImage,
    cfg: &ImageProcessorConfig,
) -> Result<PreprocessedImage, ImageError> {
    let plan = plan_slices(img.width(), img.height(), cfg)?;
    let lut = NormalizeLut::new(cfg);
    let whole = |s: Size| Region {
        x: 0,
        y: 0,
        width: s.width,
        height: s.height,
    };

    let source = resize_bicubic(img, plan.overview.width, plan.overview.height)?;
    let overview = Slice {
        pixel_values: patchify_normalized(&source, whole(plan.overview), cfg.patch_size, &lut),
        patches: plan.overview_patches(),
        size: plan.overview,
    };
    drop(source);

    let mut slices = Vec::new();
    if let (Some(grid), Some(refine), Some(size), Some(patches)) =
        (plan.grid, plan.refine, plan.slice, plan.slice_patches())
    {
        let refined = resize_bicubic(img, refine.width, refine.height)?;
        slices.reserve(grid.len());
        for r in 0..grid.rows {
            for c in 0..grid.cols {
                let region = Region {
                    x: c * size.width,
                    y: r * size.height,
                    width: size.width,
                    height: size.height,
                };
                slices.push(Slice {
                    pixel_values: patchify_normalized(&refined, region, cfg.patch_size, &lut),
                    patches,
                    size,
                });
            }
        }
    }
    Ok(PreprocessedImage {
        overview,
        grid: plan.grid,
        slices,
        patch_size: cfg.patch_size,
    })
}
