//! stride-viz: pictures of what a trained network has learnt, each as tensors (for a program to
//! use) and as a labelled PNG that reads without the code: a title naming the layer or class,
//! lines saying how to read it, and a colour scale.
//!
//! ```text
//! filters.rs       a convolution layer's weights as a grid of tiles (colour for RGB filters)
//! feature_maps.rs  each layer's output volume for one image, one tile per channel
//! occlusion.rs     the drop in the class's probability as a grey patch slides over the image
//! saliency.rs      the gradient of the class score with respect to the input pixels
//! render.rs        tiles, grids with numbers, panels, colour bars, the page, PNG
//! colormap.rs      normalisation and the colour maps (viridis, inferno, RdBu, grey)
//! ```
//!
//! Activations come from [`stride_nn::module::forward_with_activations`], under the paths that
//! `stride summary` prints; text uses the font embedded in `stride-train`.
//!
//! ```
//! use stride_viz::filters::{FilterChannels, conv_filters, render_filters};
//!
//! let mut net = stride_zoo::build("lenet5", 10, 1, 42)?;
//! let filters = conv_filters(net.as_mut(), None)?; // the first convolution, conv1
//! assert_eq!(filters.weight.dims(), &[6, 1, 5, 5]);
//! let picture = render_filters(&filters, FilterChannels::Auto)?;
//! assert!(picture.width() > 3 * 60);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod colormap;
pub mod error;
pub mod feature_maps;
pub mod filters;
pub mod occlusion;
pub mod render;
pub mod saliency;

pub use error::{Error, Result};
