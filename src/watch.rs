//! `regsh watch FILE`: runs a recipe, then runs it again every time it is saved, so a method can be
//! prototyped live.
//!
//! - The file's directory is watched (not the file: editors that save by writing a temporary file and
//!   renaming it over the original would end a watch on the file itself), events are debounced, and
//!   only those naming the file and changing it count; a save that leaves the content as it was (same
//!   hash) does not re-run.
//! - Every run gets a fresh [`Session`] on one shared [`Host`], so images loaded by a previous run are
//!   taken from the cache (keyed by path and modification time) instead of being read again.
//! - A run that fails (syntax or runtime error) prints its miette report; the state of the last good
//!   run is kept (and named in the footer).
//! - Each run prints a header (run number, time of day in UTC, file) and a footer (outcome, duration,
//!   images read from disk and from the cache).
//! - Ctrl-C cancels a running script and ends the watch.
//!
//! Only this module knows notify.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::event::EventKind;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};

use crate::diagnostics::{render_terminal, ScriptError};
use crate::dsl::Host;
use crate::session::Session;

/// Options of [`watch`].
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The script's `ARGS`.
    pub args: Vec<String>,
    /// How long the file must be quiet before a change runs (default 200 ms).
    pub debounce: Duration,
    /// Colours in error reports.
    pub colour: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { args: Vec::new(), debounce: Duration::from_millis(200), colour: false }
    }
}

/// The time of day in UTC, `HH:MM:SS`.
fn clock() -> String {
    let s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn content_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The watch loop's state.
struct Watcher {
    path: PathBuf,
    host: Arc<Host>,
    opts: WatchOptions,
    runs: usize,
    last_hash: Option<u64>,
    /// The run number whose state is kept (the last that succeeded).
    last_good: Option<(usize, Session)>,
}

impl Watcher {
    fn report(&self, e: &ScriptError) {
        // Reports go to stdout with the run's header and footer, so the three read in order.
        print!("{}", render_terminal(e, self.opts.colour));
    }

    /// Runs the file if its content changed since the last run (or always, for the first).
    fn run_if_changed(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            // Mid-rename, or deleted: the next event tells.
            return;
        };
        let h = content_hash(&text);
        if self.last_hash == Some(h) {
            tracing::debug!("{}: saved unchanged, not re-run", self.path.display());
            return;
        }
        self.last_hash = Some(h);
        self.runs += 1;
        let n = self.runs;
        println!("── run {n} · {} UTC · {} ──", clock(), self.path.display());
        let _ = std::io::stdout().flush();
        let (loads0, hits0) =
            (self.host.disk_loads.load(Ordering::Relaxed), self.host.cache_hits.load(Ordering::Relaxed));
        let t0 = Instant::now();
        let outcome = Session::with_host(self.host.clone()).and_then(|mut s| {
            s.set_args(self.opts.args.clone());
            let c = s.compile(&self.path.display().to_string(), &text)?;
            s.run(c).map(|_| s)
        });
        let secs = t0.elapsed().as_secs_f64();
        let loads = self.host.disk_loads.load(Ordering::Relaxed) - loads0;
        let hits = self.host.cache_hits.load(Ordering::Relaxed) - hits0;
        match outcome {
            Ok(s) => {
                println!("── run {n} ok in {secs:.2} s ({loads} image(s) read from disk, {hits} from the cache) ──");
                self.last_good = Some((n, s));
            }
            Err(e) => {
                self.report(&e);
                let kept = match &self.last_good {
                    Some((g, _)) => format!("keeping the state of run {g}"),
                    None => "no good run yet".to_string(),
                };
                println!("── run {n} failed in {secs:.2} s: {kept} ──");
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// Whether an event changes `path` (its paths are in the canonical watched directory).
fn touches(kind: &EventKind, paths: &[PathBuf], path: &Path) -> bool {
    !matches!(kind, EventKind::Access(_) | EventKind::Remove(_)) && paths.iter().any(|p| p == path)
}

/// Watches `file` (see the module documentation) until Ctrl-C sets `stop` (or the watcher fails).
///
/// Errors: the file does not exist; its directory cannot be watched; the session cannot start (a
/// stdlib file that does not compile).
pub fn watch(file: &Path, opts: &WatchOptions, stop: Arc<AtomicBool>) -> Result<(), Box<ScriptError>> {
    let bare = |code: &str, m: String| Box::new(ScriptError::bare(code, m));
    let path =
        std::fs::canonicalize(file).map_err(|e| bare("regsh::io::not_found", format!("{}: {e}", file.display())))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let host = Arc::new(Host::default());
    // A Ctrl-C that arrives mid-run must also stop the script: pass `stop` on to the host's cancel
    // flag, which running scripts and `iso` check.
    let done = Arc::new(AtomicBool::new(false));
    {
        let (stop, cancel, done) = (stop.clone(), host.cancel.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if stop.load(Ordering::Relaxed) {
                    cancel.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer =
        new_debouncer(opts.debounce, None, tx).map_err(|e| bare("regsh::watch", format!("file watcher: {e}")))?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| bare("regsh::watch", format!("cannot watch {}: {e}", dir.display())))?;
    // Sessions compile the stdlib; fail early if it is broken rather than at the first run.
    drop(Session::with_host(host.clone())?);
    let mut w = Watcher { path: path.clone(), host, opts: opts.clone(), runs: 0, last_hash: None, last_good: None };
    println!("watching {} (Ctrl-C to stop)", path.display());
    w.run_if_changed();
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(events)) => {
                if events.iter().any(|e| touches(&e.kind, &e.paths, &path)) {
                    w.run_if_changed();
                }
            }
            Ok(Err(errors)) => {
                for e in errors {
                    tracing::warn!("file watcher: {e}");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    done.store(true, Ordering::Relaxed);
    println!("stopped watching after {} run(s)", w.runs);
    Ok(())
}
