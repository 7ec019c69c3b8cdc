//! End-to-end tests of `stride shape` and `stride bench conv`, running the built binary.

mod common;
use common::stride;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn shape_prints_lenet_with_the_size_rule() {
    let out = stride(&[
        "shape",
        "--input",
        "1x32x32",
        "conv:6:5",
        "pool:avg:2",
        "conv:16:5",
        "pool:avg:2",
        "fc:120",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let expected_rows = [
        "  1  conv:6:5    6×28×28            156  H2 = W2 = (W1 − F + 2P)/S + 1 = (32 − 5 + 2·0)/1 + 1 = 28; D2 = K = 6",
        "  2  pool:avg:2  6×14×14              0  H2 = W2 = (W1 − F + 2P)/S + 1 = (28 − 2 + 2·0)/2 + 1 = 14; D2 = D1 = 6",
        "  5  fc:120      120             48,120  400 inputs × 120 outputs + 120 biases",
    ];
    for row in expected_rows {
        assert!(stdout.contains(row), "missing row {row:?} in\n{stdout}");
    }
    assert!(stdout.ends_with("total parameters: 50,692\n"), "{stdout}");
}

#[test]
fn shape_stops_at_the_first_bad_layer() {
    let out = stride(&["shape", "--input", "3x32x32", "conv:8:3:s2", "conv:8:31"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("conv:8:3:s2"), "rows before the bad layer are printed");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error: layer 2 `conv:8:31` on input 8×15×15: conv2d: kernel 31 does not fit in height 15"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("⌊(15 + 2·0 − 1·(31−1) − 1)/1⌋ + 1 < 1"), "{stderr}");
}

#[test]
fn shape_rejects_bad_grammar_and_volumes() {
    let out = stride(&["shape", "--input", "3x32", "conv:8"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not follow the grammar"));
    let out = stride(&["shape", "--input", "3xax32", "gap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a volume like 3x227x227"));
}

fn write_layers(json: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), json).unwrap();
    file
}

#[test]
fn bench_conv_prints_one_json_object_per_layer() {
    let layers = write_layers(
        r#"[{"name":"tiny2d","dims":2,"N":2,"Cin":3,"Cout":5,"input":[9,9],"kernel":[3,3],"stride":[1,1],
            "padding":[1,1],"dilation":[1,1],"groups":1,"bias":true},
           {"name":"tiny1d_strided","dims":1,"N":1,"Cin":4,"Cout":4,"input":[50],"kernel":[5],"stride":[2],
            "padding":[0],"dilation":[2],"groups":2,"bias":false}]"#,
    );
    let path = layers.path().to_str().unwrap();
    let out = stride(&[
        "bench",
        "conv",
        "--layers",
        path,
        "--json",
        "--threads",
        "1",
        "--min-runs",
        "2",
        "--min-seconds",
        "0",
        "--no-peak",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // Every layer in the four directions, in order.
    let keys: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["name"].as_str().unwrap(), r["direction"].as_str().unwrap())).collect();
    let directions = ["forward", "backward_input", "backward_weight", "forward_backward"];
    let expected: Vec<(&str, &str)> =
        ["tiny2d", "tiny1d_strided"].iter().flat_map(|n| directions.iter().map(move |d| (*n, *d))).collect();
    assert_eq!(keys, expected);
    for row in &rows {
        assert_eq!(row["threads"], 1);
        assert!(row["median_ms"].as_f64().unwrap() >= 0.0);
        assert!(row["gflops"].as_f64().unwrap() > 0.0);
        assert!(row["max_relative_error"].as_f64().unwrap() < 1e-4);
    }
}

#[test]
fn bench_conv_runs_the_chosen_directions_and_rejects_unknown_ones() {
    let layers = write_layers(
        r#"[{"name":"tiny3d","dims":3,"N":2,"Cin":2,"Cout":3,"input":[5,6,7],"kernel":[3,3,3],
            "stride":[1,2,1],"padding":[1,1,0],"dilation":[1,1,1],"groups":1}]"#,
    );
    let path = layers.path().to_str().unwrap();
    let common =
        ["bench", "conv", "--layers", path, "--json", "--min-runs", "1", "--min-seconds", "0", "--no-peak"];
    let out = stride(&[&common[..], &["--directions", "backward_weight,forward"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let directions: Vec<&str> = rows.iter().map(|r| r["direction"].as_str().unwrap()).collect();
    assert_eq!(directions, ["backward_weight", "forward"]);

    let out = stride(&[&common[..], &["--directions", "forward,sideways"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "unknown direction \"sideways\"; choose from forward, backward_input, backward_weight, forward_backward"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_conv_rejects_a_malformed_layers_file() {
    let layers = write_layers(
        r#"[{"name":"bad","dims":2,"N":1,"Cin":3,"Cout":5,"input":[9],"kernel":[3,3],
        "stride":[1,1],"padding":[1,1],"dilation":[1,1],"groups":1}]"#,
    );
    let out = stride(&["bench", "conv", "--layers", layers.path().to_str().unwrap(), "--no-peak"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("layer bad: `input` has 1 values but dims is 2"),
        "{}",
        text(&out.stderr)
    );
    let out = stride(&["bench", "conv", "--layers", "/nonexistent/layers.json", "--no-peak"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/layers.json"));
}

#[test]
fn bench_conv_reports_an_impossible_layer_with_the_size_rule() {
    let layers = write_layers(
        r#"[{"name":"too_big","dims":2,"N":1,"Cin":3,"Cout":5,"input":[4,4],"kernel":[7,7],
        "stride":[1,1],"padding":[0,0],"dilation":[1,1],"groups":1}]"#,
    );
    let out = stride(&["bench", "conv", "--layers", layers.path().to_str().unwrap(), "--no-peak"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("layer too_big, forward: conv2d: kernel 7 does not fit"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_net_times_inference_and_training_steps_as_json() {
    let common = ["bench", "net", "--json", "--threads", "1", "--min-runs", "2", "--min-seconds", "0"];
    let out = stride(&[&common[..], &["lenet5", "resnet20", "--batch", "3"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0]["name"].as_str(), rows[1]["name"].as_str()), (Some("lenet5"), Some("resnet20")));
    assert_eq!(rows[1]["input"], serde_json::json!([3, 32, 32]));
    for row in &rows {
        assert_eq!(
            (row["task"].as_str(), row["batch"].as_u64(), row["threads"].as_u64()),
            (Some("inference"), Some(3), Some(1))
        );
        let (median, min) = (row["median_ms"].as_f64().unwrap(), row["min_ms"].as_f64().unwrap());
        assert!(median >= min && min > 0.0, "{row}");
        let per_second = row["images_per_second"].as_f64().unwrap();
        assert!((per_second - 3.0 / (median / 1e3)).abs() <= 0.01 * per_second + 0.01, "{row}");
        if cfg!(target_os = "linux") {
            assert!(row["peak_rss_mib"].as_f64().unwrap() >= row["start_rss_mib"].as_f64().unwrap(), "{row}");
        }
    }

    let out = stride(
        &[&common[..], &["resnet20", "--task", "train", "--batch", "4", "--input", "1x28x28"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!((row["task"].as_str(), row["input"].clone()), (Some("train"), serde_json::json!([1, 28, 28])));
}

#[test]
fn bench_net_profile_lists_every_layer_with_its_time() {
    let common =
        ["bench", "net", "lenet5", "--threads", "1", "--min-runs", "2", "--min-seconds", "0", "--profile"];
    let out = stride(&[&common[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let layers = row["layers"].as_array().unwrap();
    // Every leaf of `stride summary lenet5`, in forward order.
    let paths: Vec<&str> = layers.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(paths[..4], ["conv1", "relu1", "pool1", "conv2"]);
    assert_eq!(layers[0]["output"], serde_json::json!([1, 6, 28, 28]));
    assert_eq!(layers[0]["mult_adds"].as_u64(), Some(6 * 28 * 28 * 25));
    assert!(layers.iter().all(|l| l["median_ms"].as_f64().unwrap() >= 0.0));

    let out = stride(&[&common[..], &["--top", "2"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("other layers:") && table.contains("sum of the layers' medians:"), "{table}");

    let out = stride(&[&common[..], &["--task", "train"]].concat());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--profile times the layers of the inference path"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_net_rejects_an_unknown_model_and_a_too_small_input() {
    let out = stride(&["bench", "net", "lenet7", "--min-seconds", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("lenet7"), "{}", text(&out.stderr));
    let out = stride(&["bench", "net", "alexnet", "--input", "3x16x16", "--min-seconds", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not fit"), "{}", text(&out.stderr));
}

#[test]
fn stride_max_isa_caps_the_kernels_and_rejects_an_unknown_set() {
    let layers = write_layers(
        r#"[{"name":"strips","dims":2,"N":1,"Cin":3,"Cout":7,"input":[9,11],"kernel":[3,3],"stride":[1,1],
            "padding":[1,1],"dilation":[1,1],"groups":1,"bias":true}]"#,
    );
    let path = layers.path().to_str().unwrap();
    let args =
        ["bench", "conv", "--layers", path, "--json", "--min-runs", "1", "--min-seconds", "0", "--no-peak"];
    let run = |isa: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_stride"))
            .args(args)
            .env("STRIDE_MAX_ISA", isa)
            .output()
            .expect("the stride binary runs")
    };
    // Every set at or below the CPU's: the benchmark checks each kernel against the reference
    // and names the set it used.
    let order = ["portable", "avx2", "avx512"];
    let rank = |isa: &str| order.iter().position(|&o| o == isa).unwrap();
    for isa in order {
        let out = run(isa);
        assert!(out.status.success(), "{isa}: {}", text(&out.stderr));
        for line in text(&out.stdout).lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let used = row["isa"].as_str().unwrap();
            assert!(rank(used) <= rank(isa), "capped at {isa}, used {used}");
            assert!(row["max_relative_error"].as_f64().unwrap() < 1e-4);
        }
    }
    let out = run("portable");
    assert!(text(&out.stdout).contains(r#""isa":"portable""#), "{}", text(&out.stdout));

    let out = run("sse9");
    common::assert_fails_with(&out, "STRIDE_MAX_ISA=\"sse9\" is not an instruction set stride knows");
}
