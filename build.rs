//! Embeds the web client: writes `$OUT_DIR/web_files.rs`, one entry per file in `web/`
//! (name, content type, bytes), so adding a file to the client needs no Rust change.
//! Files the browser never fetches stay out: `jsconfig.json`, type declarations, tests and
//! anything in a subdirectory.

use std::fmt::Write as _;
use std::path::Path;

fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("web/ exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !n.ends_with(".d.ts") && content_type(n).is_some())
        .collect();
    names.sort();
    let mut out = String::from("/// The web client's files: (name, content type, body).\n");
    out.push_str("pub const WEB_FILES: &[(&str, &str, &[u8])] = &[\n");
    for name in &names {
        let path = dir.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let mime = content_type(name).unwrap_or("application/octet-stream");
        writeln!(
            out,
            "    ({name:?}, {mime:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("write to a String");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR is set")).join("web_files.rs");
    std::fs::write(dest, out).expect("write web_files.rs");
}
