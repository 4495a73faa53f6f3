//! `lookout ask`: typed answers from the real binary on the tiny model, as a user runs it.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn ask_answers_each_question_in_its_type_and_refuses_bad_types() {
    let model = model_dir();
    let image = model.join("../images/square_300x300.png");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("golden_answers.json")).unwrap())
            .unwrap();
    let (yes_no, choice) = (&golden["questions"][0], &golden["questions"][1]);
    let best = |q: &Value| {
        q["options"]
            .as_array()
            .unwrap()
            .iter()
            .max_by(|a, b| {
                a["logprob"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["logprob"].as_f64().unwrap())
            })
            .unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ok, out) = lookout(
        &[
            "ask",
            "--model",
            model.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--weights",
            "f32",
            "--threads",
            "1",
            "--json",
            "--question",
            yes_no["text"].as_str().unwrap(),
            "--answer",
            "yes_no",
            "--question",
            choice["text"].as_str().unwrap(),
            "--answer",
            "choice:none,green,blue",
            "--question",
            "How many cars are in the driveway?",
            "--answer",
            "number",
        ],
        &[],
    );
    assert!(ok, "{out}");
    let lines: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    let yes = ["Yes", "yes"].contains(&best(yes_no).as_str());
    assert_eq!(lines[0]["answer"], "yes_no");
    assert_eq!(lines[0]["value"], yes, "{}", lines[0]);
    assert_eq!(lines[1]["value"], best(choice).as_str(), "{}", lines[1]);
    assert!(lines[1]["scores"]["green"].as_f64().is_some());
    assert!(
        lines[2]["value"].as_f64().is_some_and(f64::is_finite),
        "{}",
        lines[2]
    );
    for line in &lines {
        let c = line["confidence"].as_f64().unwrap();
        assert!(c > 0.0 && c <= 1.0, "{line}");
        assert!(
            line["timings"]["shared_tokens"].as_u64().unwrap() > 16,
            "{line}"
        );
    }

    // Bad answer types are refused before the model loads, each saying what is wrong.
    let refused = |rest: &[&str]| {
        let mut args = vec!["ask", "--model", model.to_str().unwrap()];
        args.extend_from_slice(rest);
        let (ok, out) = lookout(&args, &[]);
        assert!(!ok, "{out}");
        out
    };
    let out = refused(&["--question", "?", "--answer", "boolean"]);
    assert!(out.contains("unknown answer type \"boolean\""), "{out}");
    let out = refused(&["--question", "a", "--question", "b", "--answer", "yes_no"]);
    assert!(out.contains("2 --question but 1 --answer"), "{out}");
    let out = refused(&["--question", "?", "--answer", "choice:a,a"]);
    assert!(out.contains("given twice"), "{out}");
}
