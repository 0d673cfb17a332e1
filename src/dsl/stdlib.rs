//! The standard library: recipes written in the DSL (`stdlib/*.rhai`), embedded at build time.
//!
//! A user overrides them with a directory named by the environment variable `REGSH_STDLIB`: a file
//! there with the name of an embedded one (e.g. `register.rhai`) replaces it, and any other `*.rhai`
//! file there is added. A script's own `fn` of the same name as a stdlib function also wins over it.

/// The embedded files: (file name, text).
pub const EMBEDDED: [(&str, &str); 2] = [
    ("register.rhai", include_str!("../../stdlib/register.rhai")),
    ("evaluate.rhai", include_str!("../../stdlib/evaluate.rhai")),
];

/// The stdlib sources to load: (source name, text), embedded files replaced or extended by the
/// `*.rhai` files of `$REGSH_STDLIB` (sorted by name). Source names are `stdlib/NAME`, or the path of
/// a user file.
pub fn sources() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = EMBEDDED.iter().map(|(n, t)| (format!("stdlib/{n}"), t.to_string())).collect();
    let Some(dir) = std::env::var_os("REGSH_STDLIB") else { return out };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        tracing::warn!("REGSH_STDLIB={}: not a readable directory; using the embedded stdlib", dir.to_string_lossy());
        return out;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    files.sort();
    for p in files {
        let Ok(text) = std::fs::read_to_string(&p) else { continue };
        let file = p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        let name = p.display().to_string();
        match out.iter_mut().find(|(n, _)| n.ends_with(&format!("/{file}"))) {
            Some(slot) => *slot = (name, text),
            None => out.push((name, text)),
        }
    }
    out
}
