//! The REPL driven through a pseudo-terminal (rexpect), and `regsh watch` driven by saving a file in
//! place and by rename; both as the user would, through the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PROMPT: &str = "regsh> ";

#[test]
fn repl_through_a_pty_keeps_variables_across_an_error() {
    assert!(common::data("avg152/avg152T1.nii").is_file());
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regsh"));
    cmd.arg("repl")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("REGSH_HISTORY", &history)
        .env("NO_COLOR", "1")
        .env("REGSH_DATA", common::data_dir());
    let mut p = rexpect::session::spawn_command(cmd, Some(60_000)).unwrap();
    p.exp_string(PROMPT).unwrap();

    // A variable, filled in by completing a path inside the string ("data/colin" -> "data/colin27/").
    p.send("let ch2 = load(\"data/colin").unwrap();
    p.send("\t").unwrap();
    p.send_line("ch2.nii.gz\")").unwrap();
    p.exp_string(PROMPT).unwrap();
    p.send_line("ch2.shape").unwrap();
    p.exp_string("[181, 217, 181]").unwrap();

    // Completion of a builtin: "inf<TAB>" becomes "info"; the call only works if it did.
    p.send("inf").unwrap();
    p.send("\t").unwrap();
    p.send_line("(ch2).orientation").unwrap();
    p.exp_string("RAS").unwrap();
    p.exp_string(PROMPT).unwrap();

    // A script error: a report with the code, the span and a suggestion; the REPL goes on.
    p.send_line("smoth(ch2, 2.0)").unwrap();
    p.exp_string("regsh::dsl::unknown_function").unwrap();
    p.exp_string("smooth").unwrap();
    p.exp_string(PROMPT).unwrap();

    // Ctrl-C during a long registration (minutes at 1 mm) cancels it, not the REPL.
    p.send_line("let slow = register(ch2, ch2, transform=\"syn\", scales=1, iterations=[100000]);").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    p.send_control('c').unwrap();
    p.exp_string("(cancelled)").unwrap();
    p.exp_string(PROMPT).unwrap();

    // The variable is still there after the error, and multi-line input waits for the closing bracket.
    p.send_line("let s = [ch2.spacing[0],").unwrap();
    p.send_line("ch2.spacing[2]]").unwrap();
    p.exp_string(PROMPT).unwrap();
    p.send_line("s").unwrap();
    p.exp_string("[1.0, 1.0]").unwrap();
    p.exp_string(PROMPT).unwrap();

    // :help of a builtin: signature and example; :vars lists the variable; :time times an expression.
    p.send_line(":help iso").unwrap();
    p.exp_string("iso(state").unwrap();
    p.exp_string("example").unwrap();
    p.exp_string(PROMPT).unwrap();
    // :help of a measure written in the session: its name and where it was defined.
    p.send_line("let my_ncc = metric(|f, w| (f * w).mean(), name=\"my_ncc\")").unwrap();
    p.exp_string(PROMPT).unwrap();
    p.send_line(":help my_ncc").unwrap();
    p.exp_string("a measure written in the DSL, named \"my_ncc\", defined at <repl:").unwrap();
    p.exp_string(PROMPT).unwrap();
    p.send_line(":vars").unwrap();
    p.exp_string("ch2: Image =").unwrap();
    p.exp_string(PROMPT).unwrap();
    p.send_line(":time 40 + 2").unwrap();
    p.exp_string("42").unwrap();
    p.exp_string("time: ").unwrap();
    p.exp_string(PROMPT).unwrap();
    p.send_line(":hlep").unwrap();
    p.exp_string("did you mean `:help`").unwrap();
    p.exp_string(PROMPT).unwrap();
    p.send_line(":quit").unwrap();
    p.exp_eof().unwrap();

    let h = std::fs::read_to_string(&history).unwrap();
    assert!(h.contains("smoth(ch2, 2.0)") && h.contains(":help iso"), "history not saved: {h}");
}

/// Lines the watched process prints, read on a thread.
struct Output {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Output {
    /// Waits (up to `secs`) for a line containing `text`; returns the lines read up to it.
    fn until(&mut self, text: &str, secs: u64) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut lines = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    let hit = l.contains(text);
                    lines.push(l);
                    if hit {
                        return lines;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {text:?} within {secs} s; output so far:\n{}", self.seen.join("\n"));
    }

    /// The lines that arrive within `secs` (none expected, for an unchanged save).
    fn quiet(&mut self, secs: f64) -> Vec<String> {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut lines = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Ok(l) = self.rx.recv_timeout(left) {
                self.seen.push(l.clone());
                lines.push(l);
            }
        }
        lines
    }
}

fn write_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("rhai.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn watch_reruns_on_saves_in_place_and_by_rename_and_keeps_images_cached() {
    let t1 = common::data("avg152/avg152T1.nii");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("recipe.rhai");
    let body = |n: i64| format!("let t1 = load({:?});\nprint(`value ${{{n} + t1.shape[0]}}`);\n", t1.to_str().unwrap());
    std::fs::write(&script, body(1)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regsh"))
        .args(["watch", "--debounce-ms", "100"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("NO_COLOR", "1")
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut out = Output { rx, seen: Vec::new() };

    // Run 1 at start: reads the image from disk.
    let l = out.until("── run 1 ok", 60);
    assert!(l.iter().any(|l| l == "value 92"), "{l:?}");
    assert!(l.last().unwrap().contains("1 image(s) read from disk, 0 from the cache"), "{l:?}");

    // Saved in place: run 2, the image comes from the cache.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&script, body(2)).unwrap();
    let l = out.until("── run 2 ok", 30);
    assert!(l.iter().any(|l| l == "value 93"), "{l:?}");
    assert!(l.last().unwrap().contains("0 image(s) read from disk, 1 from the cache"), "{l:?}");

    // Saved by rename (as vim and most editors do): run 3.
    std::thread::sleep(Duration::from_millis(300));
    write_by_rename(&script, &body(3));
    let l = out.until("── run 3 ok", 30);
    assert!(l.iter().any(|l| l == "value 94"), "{l:?}");

    // Saved unchanged (in place and by rename): no run.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&script, body(3)).unwrap();
    write_by_rename(&script, &body(3));
    let l = out.quiet(1.5);
    assert!(!l.iter().any(|l| l.contains("── run")), "an unchanged save re-ran: {l:?}");

    // A syntax error: its report, pointing at the line; the last good state is kept.
    std::fs::write(&script, "let t1 = load(\"x.nii\";\n").unwrap();
    let l = out.until("── run 4 failed", 30);
    let text = l.join("\n");
    assert!(text.contains("regsh::dsl::syntax") && text.contains("recipe.rhai:1:"), "{text}");
    assert!(l.last().unwrap().contains("keeping the state of run 3"), "{l:?}");

    // The fix: run 5.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&script, body(5)).unwrap();
    let l = out.until("── run 5 ok", 30);
    assert!(l.iter().any(|l| l == "value 96"), "{l:?}");
    let runs = out.seen.iter().filter(|l| l.starts_with("── run ") && l.contains(" UTC · ")).count();
    assert_eq!(runs, 5, "{:?}", out.seen);

    // Ctrl-C (SIGINT) stops it.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    out.until("stopped watching after 5 run(s)", 10);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn watch_through_a_pty_reruns_a_changed_script_measure_and_keeps_the_last_good_run_of_a_broken_one() {
    let t1 = common::data("avg152/avg152T1.nii");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("measure.rhai");
    // A measure written in the DSL, and a registration with it of a known 3 mm shift along x.
    let recipe = |measure: &str| {
        format!(
            "let t1 = load({:?});\nlet moved = warp(t1, translation([3.0, 0.0, 0.0]), t1);\n{measure}\nlet r = init(moved, t1, transform=\"translation\", method=\"identity\") |> iso(m, scales=2, iterations=[30, 20]);\nprint(`measure ${{m.name}} shift ${{round(r.params[0] * 10.0) / 10.0}}`);\n",
            t1.to_str().unwrap()
        )
    };
    let ncc = "let m = metric(|f, w| {\n    let a = f - f.mean();\n    let b = w - w.mean();\n    (a * b).mean() / sqrt((a * a).mean() * (b * b).mean())\n}, name=\"my_ncc\");";
    let ssd = "let m = metric(|f, w| ((f - w) ** 2).mean(), name=\"my_ssd\", higher_is_better=false);";
    let broken = "let m = metric(|f, w| {\n    (f - w).no_such_method()\n}, name=\"broken\");";
    std::fs::write(&script, recipe(ncc)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regsh"));
    cmd.args(["watch", "--debounce-ms", "100"]).arg(&script).env("NO_COLOR", "1");
    let mut p = rexpect::session::spawn_command(cmd, Some(120_000)).unwrap();

    // (rexpect reads bytes as Latin-1: the needles are ASCII.)
    // Run 1: the script NCC recovers the shift (moved(x) = t1(x + 3): the transform is x - 3 mm).
    p.exp_string("measure my_ncc shift -3").unwrap();
    p.exp_string(" run 1 ok in ").unwrap();

    // The measure changed and saved: run 2 registers with the new one.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&script, recipe(ssd)).unwrap();
    p.exp_string("measure my_ssd shift -3").unwrap();
    p.exp_string(" run 2 ok in ").unwrap();

    // A broken closure: its report, at the closure's line inside iso, and the last good run is kept.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&script, recipe(broken)).unwrap();
    p.exp_string("unknown function `no_such_method`").unwrap();
    p.exp_string("measure.rhai:4:").unwrap();
    let before = p.exp_string("keeping the state of run 2").unwrap();
    assert!(!before.contains("measure broken shift"), "{before}");

    // Fixed again: run 4.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&script, recipe(ncc)).unwrap();
    p.exp_string(" run 4 ok in ").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("stopped watching after 4 run(s)").unwrap();
}
