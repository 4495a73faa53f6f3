//! MiniCPM-V 4.6 slicing geometry (no pixels).
//!
//! Mirrors `get_sliced_grid`, `find_best_resize`, `get_refine_size` and
//! `ensure_divide` of `image_processing_pil_minicpmv4_6.py` operation for
//! operation, including Python's float semantics (`int()` truncates,
//! `round()` is round-half-to-even, `/` is f64 division), so the chosen grid
//! and sizes match the reference for every input size.
//!
//! The result of planning an image is:
//! * an **overview** ("source") image: the whole picture resized so its area
//!   is about `scale_resolution²` (upscaled if small), both sides multiples
//!   of `patch_size * merge_factor`;
//! * optionally a **grid** of `rows x cols` slices cut from a **refined**
//!   resize of the whole picture, each slice again about
//!   `scale_resolution²` and aligned the same way.

use super::{DownsampleMode, ImageError, ImageProcessorConfig};

/// Width x height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// Slice grid, `rows` along the height and `cols` along the width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceGrid {
    pub rows: u32,
    pub cols: u32,
}

impl SliceGrid {
    /// Number of slices.
    pub fn len(&self) -> usize {
        self.rows as usize * self.cols as usize
    }

    /// Never true for a grid produced by [`get_sliced_grid`] (at least 2).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Patch grid of one slice (`target_sizes` row of the processor:
/// `[height / patch_size, width / patch_size]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGrid {
    pub rows: u32,
    pub cols: u32,
}

impl PatchGrid {
    /// Number of ViT patches.
    pub fn num_patches(&self) -> usize {
        self.rows as usize * self.cols as usize
    }

    /// Number of `<|image_pad|>` tokens this slice becomes in the prompt
    /// (`prod(target_size) // divisor`).
    pub fn num_tokens(&self, mode: DownsampleMode) -> usize {
        self.num_patches() / mode.token_divisor() as usize
    }
}

/// Everything about an image's preprocessing that does not need its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlicePlan {
    /// Size of the input image.
    pub input: Size,
    /// Size the overview image is resized to.
    pub overview: Size,
    /// The slice grid, `None` when the image is not sliced.
    pub grid: Option<SliceGrid>,
    /// Size the whole image is resized to before cutting it into slices
    /// (`grid.cols * slice.width` x `grid.rows * slice.height`).
    pub refine: Option<Size>,
    /// Size of each slice (all slices of an image have the same size).
    pub slice: Option<Size>,
    /// Patch size the grids below are counted in.
    pub patch_size: u32,
}

impl SlicePlan {
    /// Patch grid of the overview image.
    pub fn overview_patches(&self) -> PatchGrid {
        patch_grid(self.overview, self.patch_size)
    }

    /// Patch grid of each slice, if sliced.
    pub fn slice_patches(&self) -> Option<PatchGrid> {
        self.slice.map(|s| patch_grid(s, self.patch_size))
    }

    /// The processor's `target_sizes` rows for this image: overview first,
    /// then one per slice in row-major order.
    pub fn target_sizes(&self) -> Vec<PatchGrid> {
        let mut v = vec![self.overview_patches()];
        if let (Some(grid), Some(p)) = (self.grid, self.slice_patches()) {
            v.extend(std::iter::repeat_n(p, grid.len()));
        }
        v
    }
}

fn patch_grid(s: Size, patch: u32) -> PatchGrid {
    PatchGrid {
        rows: s.height / patch,
        cols: s.width / patch,
    }
}

/// Largest side we accept for any computed size. The geometry is bounded by
/// `scale_resolution * sqrt(aspect) * grid`, so this only trips on configs
/// or inputs far outside anything sensible.
const MAX_SIDE: f64 = 1_000_000.0;

/// Plan the overview / grid / slice sizes for a `width` x `height` image.
///
/// Same decisions as the reference `_preprocess` (with `do_resize=True`):
/// the grid comes from [`get_sliced_grid`] when `slice_mode` is on, the
/// overview may be upscaled only when there is no grid, and the refined
/// image always may be.
pub fn plan_slices(
    width: u32,
    height: u32,
    cfg: &ImageProcessorConfig,
) -> Result<SlicePlan, ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { width, height });
    }
    cfg.validate()?;
    let input = Size { width, height };
    let grid = if cfg.slice_mode {
        get_sliced_grid(input, cfg.max_slice_nums, cfg.scale_resolution)
    } else {
        None
    };
    let overview = find_best_resize(
        f64::from(height),
        f64::from(width),
        cfg.scale_resolution,
        cfg.patch_size,
        cfg.downsample_mode,
        grid.is_none(),
    )?;
    let (refine, slice) = match grid {
        Some(g) => {
            let r = get_refine_size(
                input,
                g,
                cfg.scale_resolution,
                cfg.patch_size,
                cfg.downsample_mode,
            )?;
            let s = Size {
                width: r.width / g.cols,
                height: r.height / g.rows,
            };
            (Some(r), Some(s))
        }
        None => (None, None),
    };
    Ok(SlicePlan {
        input,
        overview,
        grid,
        refine,
        slice,
        patch_size: cfg.patch_size,
    })
}

/// Python's `int(x)` for the non-negative finite values that occur here.
fn py_int(x: f64) -> f64 {
    x.trunc()
}

/// `ensure_divide(length, divisor) = max(round(length / divisor) * divisor, divisor)`
/// with Python's banker's rounding.
pub fn ensure_divide(length: f64, divisor: u32) -> f64 {
    let d = f64::from(divisor);
    ((length / d).round_ties_even() * d).max(d)
}

/// `find_best_resize`: the size (multiple of `patch_size * merge_factor`)
/// an image of `height` x `width` is resized to. Big images (area above
/// `scale_resolution²`) or any image when `allow_upscale` are rescaled to
/// area ~`scale_resolution²` at the same aspect ratio first.
///
/// Takes floats because `get_refine_size` passes fractional slice sizes.
pub fn find_best_resize(
    height: f64,
    width: f64,
    scale_resolution: u32,
    patch_size: u32,
    mode: DownsampleMode,
    allow_upscale: bool,
) -> Result<Size, ImageError> {
    let (mut h, mut w) = (height, width);
    let sr = f64::from(scale_resolution);
    if h * w > sr * sr || allow_upscale {
        let aspect_ratio = w / h;
        h = py_int(sr / aspect_ratio.sqrt());
        w = py_int(h * aspect_ratio);
    }
    let divisor = patch_size * mode.merge_factor();
    let best_w = ensure_divide(w, divisor);
    let best_h = ensure_divide(h, divisor);
    to_size(best_w, best_h)
}

fn to_size(w: f64, h: f64) -> Result<Size, ImageError> {
    if !(w.is_finite() && h.is_finite()) || w > MAX_SIDE || h > MAX_SIDE || w < 1.0 || h < 1.0 {
        return Err(ImageError::InvalidSize {
            width: if w.is_finite() { w as u64 } else { u64::MAX },
            height: if h.is_finite() { h as u64 } else { u64::MAX },
            reason: "computed slice geometry is out of range",
        });
    }
    Ok(Size {
        width: w as u32,
        height: h as u32,
    })
}

/// `get_refine_size`: size of the refined image that is cut into `grid`
/// slices; each slice is `find_best_resize(refined / grid, allow_upscale=True)`.
pub fn get_refine_size(
    image: Size,
    grid: SliceGrid,
    scale_resolution: u32,
    patch_size: u32,
    mode: DownsampleMode,
) -> Result<Size, ImageError> {
    let refine_w = ensure_divide(f64::from(image.width), grid.cols);
    let refine_h = ensure_divide(f64::from(image.height), grid.rows);
    let best = find_best_resize(
        refine_h / f64::from(grid.rows),
        refine_w / f64::from(grid.cols),
        scale_resolution,
        patch_size,
        mode,
        true,
    )?;
    to_size(
        f64::from(best.width) * f64::from(grid.cols),
        f64::from(best.height) * f64::from(grid.rows),
    )
}

/// `get_sliced_grid`: `None` when the image fits in about one slice
/// (`ceil(W*H / scale_resolution²)`, capped by `max_slice_nums`, is <= 1);
/// otherwise, among slice counts `multiple - 1 ..= multiple + 1` (excluding
/// 1 and anything above `max_slice_nums`), the `rows x cols` factorisation
/// whose aspect ratio is closest to the image's in log space, ties going
/// to more rows.
pub fn get_sliced_grid(
    image: Size,
    max_slice_nums: u32,
    scale_resolution: u32,
) -> Option<SliceGrid> {
    let (w, h) = (u64::from(image.width), u64::from(image.height));
    let log_ratio = (w as f64 / h as f64).ln();
    let sr2 = u64::from(scale_resolution) * u64::from(scale_resolution);
    let ratio = (w * h) as f64 / sr2 as f64;
    let multiple = (ratio.ceil() as u64).min(u64::from(max_slice_nums));
    if multiple <= 1 {
        return None;
    }
    let mut best = SliceGrid { rows: 1, cols: 1 };
    let mut min_error = f64::INFINITY;
    for num_slices in [multiple - 1, multiple, multiple + 1] {
        if num_slices == 1 || num_slices > u64::from(max_slice_nums) {
            continue;
        }
        for rows in 1..=num_slices {
            if num_slices % rows != 0 {
                continue;
            }
            let cols = num_slices / rows;
            let error = (log_ratio - (cols as f64 / rows as f64).ln()).abs();
            // Both bounded by max_slice_nums (validated <= 1024).
            let candidate = SliceGrid {
                rows: rows as u32,
                cols: cols as u32,
            };
            if error < min_error || (error == min_error && candidate.rows > best.rows) {
                best = candidate;
                min_error = error;
            }
        }
    }
    Some(best)
}
