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
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "tiny2d");
    assert_eq!(rows[1]["direction"], "forward");
    for row in &rows {
        assert_eq!(row["threads"], 1);
        assert!(row["median_ms"].as_f64().unwrap() >= 0.0);
        assert!(row["gflops"].as_f64().unwrap() > 0.0);
        assert!(row["max_relative_error"].as_f64().unwrap() < 1e-4);
    }
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
        text(&out.stderr).contains("layer too_big: conv2d: kernel 7 does not fit"),
        "{}",
        text(&out.stderr)
    );
}
