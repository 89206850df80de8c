//! The layering ARCHITECTURE.md describes holds: no import cycle between files or top-level
//! modules, and no import from a lower layer to a higher one (scripts/module_graph.py reads the
//! graph; its LAYERS are ARCHITECTURE.md's).
mod common;

use common::repo_path;

#[test]
fn the_module_graph_has_no_cycle_and_no_upward_import() {
    let output = std::process::Command::new(repo_path(".venv/bin/python"))
        .arg(repo_path("scripts/module_graph.py"))
        .arg("--check")
        .arg(repo_path("src"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "scripts/module_graph.py --check failed:\n{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("cycles between files: 0; between top-level modules: 0"), "{printed}");
}

#[test]
fn the_check_fails_on_a_cycle() {
    let dir = tempfile::TempDir::new().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("schema/mod.rs", "use crate::run::thing;\n");
    write("run/mod.rs", "use crate::schema::Report;\n");
    let output = std::process::Command::new(repo_path(".venv/bin/python"))
        .arg(repo_path("scripts/module_graph.py"))
        .arg("--check")
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(printed.contains("cycle: run <-> schema") && printed.contains("schema -> run"), "{printed}");
}
