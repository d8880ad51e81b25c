//! The README's promises about what a run does on a user's cluster stay true: every topic a
//! run creates and every consumer group it commits with is listed under "Point it at your
//! Kafka", and nothing listed there is made up. The Quick start has exactly two commands.

#![allow(clippy::unwrap_used)]

use pipeline::topology;

fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text.find(heading).unwrap_or_else(|| panic!("the README has `{heading}`"));
    let rest = &text[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

#[test]
fn the_readme_lists_every_topic_and_group_a_run_uses() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let kafka = section(&readme, "## Point it at your Kafka");
    use tailgate::workers::{APPEND_TOPIC, CONTROL_TOPIC, RESULTS_TOPIC};
    let topics: Vec<&str> = topology::every_topic().chain([CONTROL_TOPIC, RESULTS_TOPIC, APPEND_TOPIC]).collect();
    for t in &topics {
        assert!(kafka.contains(&format!("`{t}`")), "the README does not list topic {t}");
    }
    let mut groups = topology::stage_groups();
    groups.extend(topology::helper_groups());
    for g in &groups {
        assert!(kafka.contains(&format!("`{g}`")), "the README does not list group {g}");
    }
    // Every `story.*` or `tailgate.*` topic and `tailgate-*` group named there exists.
    for word in kafka.split('`').skip(1).step_by(2) {
        if (word.starts_with("story.") || word.starts_with("tailgate.")) && !word.contains(' ') {
            assert!(topics.contains(&word), "the README lists {word}, which no run creates");
        }
        if word.starts_with("tailgate-") && word != "tailgate-" && !word.ends_with('*') {
            assert!(groups.iter().any(|g| g == word), "the README lists group {word}, which no run uses");
        }
    }
}

#[test]
fn the_quick_start_is_two_commands() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let quick = section(&readme, "## Quick start");
    let block = quick.split("```").nth(1).unwrap();
    let commands: Vec<&str> = block.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(commands, ["cargo run --release -- run scenarios/quickstart.toml", "cargo test --workspace"]);
    let ci = std::fs::read_to_string(".ci/run").unwrap();
    assert!(ci.lines().any(|l| l.trim() == "cargo test --workspace"), ".ci/run runs the README's test command");
}
