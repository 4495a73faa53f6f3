//! Placeholder text for images in a prompt, as `MiniCPMV4_6Processor` builds
//! it before tokenisation.
//!
//! For one image (`replace_image_token` + `_prepend_local_ids`):
//!
//! ```text
//! [<image_id>{k}</image_id>]<image>{pad × overview}</image>
//! <slice>{pad × n}</slice><slice>{pad × n}</slice>…   ← grid row 0
//! \n<slice>…</slice>…                                 ← grid row 1, …
//! ```
//!
//! i.e. no separator between `</image>` and the first `<slice>`, slices of a
//! row concatenated, rows joined by `"\n"`, and no trailing newline. `k` is
//! the image's 0-based index within its own prompt. Each image token
//! (`<|image_pad|>`) occurrence in the text is replaced, in order, by the
//! placeholder of the next image.

use super::{DownsampleMode, ImageError, SliceGrid, SlicePlan};

/// Special-token strings used in placeholders (tokenizer
/// `extra_special_tokens`); [`Default`] gives MiniCPM-V 4.6's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceholderTokens {
    /// Repeated once per vision token; also the marker in user text.
    pub image_token: String,
    pub image_start: String,
    pub image_end: String,
    pub slice_start: String,
    pub slice_end: String,
    pub image_id_start: String,
    pub image_id_end: String,
}

impl Default for PlaceholderTokens {
    fn default() -> Self {
        Self {
            image_token: "<|image_pad|>".into(),
            image_start: "<image>".into(),
            image_end: "</image>".into(),
            slice_start: "<slice>".into(),
            slice_end: "</slice>".into(),
            image_id_start: "<image_id>".into(),
            image_id_end: "</image_id>".into(),
        }
    }
}

/// How many vision tokens each part of an image turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTokenLayout {
    /// Tokens of the overview image.
    pub overview_tokens: usize,
    /// Slice grid, `None` if the image was not sliced.
    pub grid: Option<SliceGrid>,
    /// Tokens per slice, row-major (`grid.rows * grid.cols` entries).
    pub slice_tokens: Vec<usize>,
}

impl ImageTokenLayout {
    /// Token layout straight from the geometry, without touching pixels.
    pub fn from_plan(plan: &SlicePlan, mode: DownsampleMode) -> Self {
        let slice_tokens = match (plan.grid, plan.slice_patches()) {
            (Some(g), Some(p)) => vec![p.num_tokens(mode); g.len()],
            _ => Vec::new(),
        };
        Self {
            overview_tokens: plan.overview_patches().num_tokens(mode),
            grid: plan.grid,
            slice_tokens,
        }
    }

    /// Total image tokens (excluding the start/end/id marker tokens).
    pub fn total_tokens(&self) -> usize {
        self.overview_tokens + self.slice_tokens.iter().sum::<usize>()
    }
}

/// Placeholder string for one image; `image_id` adds the
/// `<image_id>k</image_id>` prefix (when the config's `use_image_id`).
pub fn image_placeholder(
    layout: &ImageTokenLayout,
    tokens: &PlaceholderTokens,
    image_id: Option<usize>,
) -> String {
    let pad = tokens.image_token.as_str();
    let mut s = String::with_capacity(pad.len() * (layout.total_tokens() + 4));
    if let Some(k) = image_id {
        s.push_str(&tokens.image_id_start);
        s.push_str(&k.to_string());
        s.push_str(&tokens.image_id_end);
    }
    s.push_str(&tokens.image_start);
    s.push_str(&pad.repeat(layout.overview_tokens));
    s.push_str(&tokens.image_end);
    if let Some(g) = layout.grid.filter(|g| !g.is_empty()) {
        for (i, n) in layout.slice_tokens.iter().enumerate() {
            if i > 0 && i % g.cols as usize == 0 {
                s.push('\n');
            }
            s.push_str(&tokens.slice_start);
            s.push_str(&pad.repeat(*n));
            s.push_str(&tokens.slice_end);
        }
    }
    s
}

/// Replace each image token in `text` (one prompt / one sample) with the
/// placeholder of the corresponding image, numbering images from 0 when
/// `use_image_id`. Fails if the counts differ.
pub fn expand_image_placeholders(
    text: &str,
    images: &[ImageTokenLayout],
    tokens: &PlaceholderTokens,
    use_image_id: bool,
) -> Result<String, ImageError> {
    let pad = tokens.image_token.as_str();
    let found = if pad.is_empty() {
        0
    } else {
        text.matches(pad).count()
    };
    if found != images.len() {
        return Err(ImageError::PlaceholderMismatch {
            placeholders: found,
            images: images.len(),
        });
    }
    if images.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split(pad);
    out.push_str(parts.next().unwrap_or_default());
    for ((k, layout), rest) in images.iter().enumerate().zip(parts) {
        out.push_str(&image_placeholder(
            layout,
            tokens,
            use_image_id.then_some(k),
        ));
        out.push_str(rest);
    }
    Ok(out)
}
