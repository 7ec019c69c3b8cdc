//! The LeNet-5 shipped with stride is the one the README describes: evaluated on Fashion-MNIST's
//! 10,000 test images it scores what its run's metrics.csv recorded after the last epoch.
//!
//! The data set is found as `stride train` finds it ($STRIDE_DATA, the user's cache,
//! /usr/share/datasets/fashion-mnist); `.ci/run` installs Debian's `dataset-fashion-mnist`.

use stride_data::datasets::{DatasetName, Discovery};
use stride_serve::model::{SHIPPED_PATH, SHIPPED_WEIGHTS, shipped_test_accuracy};
use stride_train::data::prepare;
use stride_train::evaluate;
use stride_train::run_dir::model_from_weights;

#[test]
fn the_shipped_lenet5_scores_its_recorded_test_accuracy() {
    let Some(found) = Discovery::standard(None).find(DatasetName::FashionMnist) else {
        panic!(
            "Fashion-MNIST was not found: install it with `apt-get install dataset-fashion-mnist` \
             (as .ci/run does) or point $STRIDE_DATA at a folder holding its four IDX files"
        );
    };
    let (config, mut model) = model_from_weights(SHIPPED_WEIGHTS, SHIPPED_PATH).unwrap();
    assert_eq!(
        (config.model.as_str(), config.dataset.as_str(), config.seed),
        ("lenet5", "fashion-mnist", 42)
    );
    let data = prepare(&config, &found.dir).unwrap();
    let (score, _) = evaluate(model.as_mut(), &data.test, config.classes.len()).unwrap();
    let (epochs, recorded) = shipped_test_accuracy().unwrap();
    assert_eq!(epochs, config.epochs);
    // Kernels may round differently from the ones that trained it; a few images out of 10,000 may
    // change sides, no more.
    assert!((score.accuracy - recorded).abs() <= 0.0005, "{} vs recorded {recorded}", score.accuracy);
}
