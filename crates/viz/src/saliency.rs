//! Which pixels the class score is most sensitive to: the gradient of the score with respect to
//! the input (Simonyan, Vedaldi & Zisserman 2014, *Deep inside convolutional networks:
//! visualising image classification models and saliency maps*, §3).
//!
//! ```text
//! input     [1, C, H, W]   one prepared image, a Var that records the graph
//! score     S_k            the class's logit (before the softmax, as the paper)
//! gradient  [C, H, W]      ∂S_k/∂input, by one backward pass in evaluation mode
//! map       [H, W]         max over the channels of |gradient|
//! ```
//!
//! A bright pixel is one where a small change moves the score most: the network's first-order
//! view of the evidence, noisy but computed in one pass (occlusion needs one pass per position).

use image::RgbImage;
use stride_nn::module::{Mode, Module, named_parameters};
use stride_tensor::Tensor;
use stride_tensor::autograd::Var;
use stride_tensor::ops::reduce::softmax;

use crate::colormap::ColorMap;
use crate::error::{Error, Result};
use crate::occlusion::{argmax, check_class};
use crate::render::{ColourBar, Figure, enlarge, format_value, heat_tile, resize, side_by_side};

/// The result for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct SaliencyMap {
    pub class: usize,
    /// The class's logit `S_k` and its probability.
    pub score: f32,
    pub probability: f32,
    /// `[C, H, W]`: ∂S_k/∂input.
    pub gradient: Tensor,
    /// `[H, W]`: max over channels of |∂S_k/∂input|.
    pub map: Tensor,
}

/// The saliency of `class` (the predicted one when `None`) for `input` `[1, C, H, W]`.
///
/// The backward pass also reaches the network's parameters; their accumulated gradients are
/// cleared afterwards, as after an optimiser step.
pub fn saliency(model: &mut dyn Module, input: &Tensor, class: Option<usize>) -> Result<SaliencyMap> {
    let [c, h, w] = match *input.dims() {
        [1, c, h, w] => [c, h, w],
        _ => {
            return Err(Error::Invalid(format!(
                "saliency takes one image [1, C, H, W], got {}",
                input.shape()
            )));
        }
    };
    let x = Var::parameter(input.clone());
    let logits = model.forward(&x, Mode::Eval)?;
    let scores = logits.value();
    if scores.rank() != 2 {
        return Err(Error::Invalid(format!(
            "the network's output is {}, not class scores [1, classes]",
            scores.shape()
        )));
    }
    let classes = scores.dims()[1];
    let class = match class {
        Some(k) => {
            check_class(k, classes)?;
            k
        }
        None => argmax(scores.data()),
    };
    let score = scores.data()[class];
    let probability = softmax(scores, 1)?.data()[class];
    let mut seed = vec![0f32; classes];
    seed[class] = 1.0;
    let backward = logits.backward_with(Tensor::new(vec![1, classes], seed)?);
    for (_, p) in named_parameters(model) {
        p.zero_grad();
    }
    backward?;
    let gradient = match x.grad() {
        Some(g) => Tensor::new(vec![c, h, w], g.into_data())?,
        // The score does not depend on the input at all.
        None => Tensor::zeros([c, h, w])?,
    };
    let plane = h * w;
    let data = gradient.data();
    let map = (0..plane).map(|i| (0..c).map(|ch| data[ch * plane + i].abs()).fold(0f32, f32::max)).collect();
    Ok(SaliencyMap { class, score, probability, map: Tensor::new(vec![h, w], map)?, gradient })
}

/// The map as a picture: the image as the network sees it beside the map, with a colour scale.
/// `picture` is the input as an image ([`crate::render::input_picture`]).
pub fn render_saliency(picture: &RgbImage, map: &SaliencyMap, class_name: &str) -> Result<RgbImage> {
    let [h, w] = match *map.map.dims() {
        [h, w] => [h, w],
        _ => return Err(Error::Invalid(format!("a saliency map is [H, W], got {}", map.map.shape()))),
    };
    if picture.dimensions() != (w as u32, h as u32) {
        return Err(Error::Invalid(format!(
            "the picture is {}×{} but the saliency map is {w}×{h}",
            picture.width(),
            picture.height()
        )));
    }
    let largest = map.map.data().iter().copied().fold(0f32, f32::max);
    let shown = enlarge(picture, 280);
    let (sw, sh) = shown.dimensions();
    let heat = heat_tile(map.map.data(), h, w, 0.0, largest, ColorMap::Inferno);
    let body = side_by_side(&[
        ("input, as the network sees it", shown.clone()),
        ("saliency: max over channels of |gradient|", resize(&heat, sw, sh)),
    ])?;
    let figure = Figure {
        title: format!(
            "Saliency: {class_name} (class {}), score {}, p = {:.3}",
            map.class,
            format_value(map.score),
            map.probability
        ),
        lines: vec![
            "the gradient of the class score (its logit) with respect to each input pixel, by one backward pass".into(),
            "bright: a small change of this pixel moves the score most".into(),
        ],
        body,
        bar: Some(ColourBar {
            map: ColorMap::Inferno,
            low: 0.0,
            high: largest,
            label: format!("max over channels of |∂ score({class_name}) / ∂ pixel|"),
            end_words: None,
        }),
    };
    figure.render()
}

#[cfg(test)]
mod tests {
    use stride_nn::init::{normal, rng};
    use stride_nn::layers::{Activation, Conv2d, Flatten, Linear};
    use stride_nn::module::Sequential;
    use stride_tensor::autograd::no_grad;
    use stride_tensor::ops::conv::ConvSpec;

    use super::*;

    /// Two input channels, a 3×3 convolution to 3 channels, tanh (smooth: no kinks for the finite
    /// differences to straddle), and a linear layer to 4 classes.
    fn tiny_net() -> Sequential {
        let mut r = rng(11);
        let conv = Conv2d::from_parts(
            normal([3, 2, 3, 3], 0.0, 0.5, &mut r).unwrap(),
            Some(normal([3], 0.0, 0.1, &mut r).unwrap()),
            ConvSpec::new().padding(1),
        )
        .unwrap();
        let fc = Linear::from_parts(normal([4, 3 * 4 * 4], 0.0, 0.3, &mut r).unwrap(), None).unwrap();
        Sequential::new(vec![
            Box::new(conv),
            Box::new(Activation::Tanh),
            Box::new(Flatten::default()),
            Box::new(fc),
        ])
    }

    /// The gradient agrees with central finite differences of the logit (in f64 from f32 runs).
    #[test]
    fn the_gradient_matches_finite_differences() {
        let mut net = tiny_net();
        let input = normal([1, 2, 4, 4], 0.0, 1.0, &mut rng(12)).unwrap();
        let class = 2;
        let result = saliency(&mut net, &input, Some(class)).unwrap();
        assert_eq!(result.class, class);
        assert_eq!(result.gradient.dims(), &[2, 4, 4]);
        let logit = |net: &mut Sequential, x: Tensor| {
            no_grad(|| net.forward(&Var::constant(x), Mode::Eval)).unwrap().value().data()[class] as f64
        };
        assert!((logit(&mut net, input.clone()) - result.score as f64).abs() < 1e-6);
        let eps = 1e-2f32;
        for i in 0..input.numel() {
            let shifted = |delta: f32| {
                let mut data = input.data().to_vec();
                data[i] += delta;
                Tensor::new(input.dims().to_vec(), data).unwrap()
            };
            let numeric =
                (logit(&mut net, shifted(eps)) - logit(&mut net, shifted(-eps))) / (2.0 * eps as f64);
            let analytic = result.gradient.data()[i] as f64;
            assert!((numeric - analytic).abs() < 2e-3, "input {i}: {numeric} vs {analytic}");
        }
        for p in 0..16 {
            let expected = result.gradient.data()[p].abs().max(result.gradient.data()[16 + p].abs());
            assert_eq!(result.map.data()[p], expected);
        }
        // The parameters' gradients are cleared.
        assert!(named_parameters(&mut net).iter().all(|(_, p)| p.grad().is_none()));
    }

    #[test]
    fn the_predicted_class_is_the_default_and_others_are_checked() {
        let mut net = tiny_net();
        let input = normal([1, 2, 4, 4], 0.0, 1.0, &mut rng(13)).unwrap();
        let logits = no_grad(|| net.forward(&Var::constant(input.clone()), Mode::Eval)).unwrap();
        let result = saliency(&mut net, &input, None).unwrap();
        assert_eq!(result.class, argmax(logits.value().data()));
        assert_eq!(
            saliency(&mut net, &input, Some(4)).unwrap_err().to_string(),
            "class 4 is out of range: the network scores 4 classes (0 to 3)"
        );
        let picture = crate::render::input_picture(&input, &[], &[]).unwrap();
        let image = render_saliency(&picture, &result, "two").unwrap();
        assert!(image.width() > 2 * 280, "{:?}", image.dimensions());
    }
}
